"""The AI platform's work: local validation runs, field performance and its alerts, inference calls.

Modules stay behind the kernel's types: a task is found by key among the installed modules'
``ai_tasks``, a model version through the kernel's registry. Validation runs in a worker thread
and writes its progress to its row, so pages and the CLI can follow it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.ai import field, report, validation
from tianfu.ai.settings import AiSettings
from tianfu.ai.tables import AlertRecord, ValidationRun
from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Invalid, NotFound
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_registry import service as registry
from tianfu.core.model_registry.manifest import ActiveModel, AiTask, InferenceResult
from tianfu.core.model_registry.models import ModelVersion
from tianfu.core.plugins import installed_modules

log = logging.getLogger(__name__)

SAFETY_NOTE = (
    "AI decision support, not a diagnosis or a prescription: a clinician confirms or corrects every output."
)


@lru_cache
def tasks() -> dict[str, AiTask]:
    found: dict[str, AiTask] = {}
    for module in installed_modules():
        if module.ai_tasks is not None:
            found.update({task.key: task for task in module.ai_tasks()})
    return found


def task_for(model: ModelVersion) -> AiTask:
    task = tasks().get(model.task)
    if task is None:
        raise NotFound(f"no installed module serves task {model.task} of model {model.name}")
    return task


def version_row(session: Session, name: str, version: str | None) -> ModelVersion:
    """The named version, or without one the active version (the newest when the model is off)."""
    if version is not None:
        return registry.find_version(session, name, version)
    rows = registry.versions(session, name)
    if not rows:
        raise NotFound(f"no model {name}")
    return next((r for r in rows if r.active), rows[-1])


# ---------------------------------------------------------------------------------------------
# Local validation
# ---------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The dataset's fingerprint; a directory (PhysioNet stays) hashes its files' names and contents."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def uploads_dir(var_dir: Path) -> Path:
    return var_dir / "ai" / "uploads"


STALE_RUN = timedelta(minutes=15)  # a worker writes progress at least this often while it lives


def recover_interrupted_runs(session: Session, var_dir: Path) -> int:
    """At start: runs whose worker has given no sign for STALE_RUN are failed (a stopped server left them;
    another worker's live runs keep their heartbeat), and uploads older than a day are deleted."""
    now = utcnow()
    stale = list(
        session.scalars(
            select(ValidationRun).where(
                ValidationRun.status.in_(("queued", "running")), ValidationRun.heartbeat_at < now - STALE_RUN
            )
        )
    )
    for run in stale:
        run.status, run.error, run.finished_at = "failed", "the server stopped before the run finished", now
    folder = uploads_dir(var_dir)
    if folder.is_dir():
        for leftover in folder.iterdir():
            if leftover.stat().st_mtime < now.timestamp() - 86_400:
                leftover.unlink(missing_ok=True)
    return len(stale)


def create_validation(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    model_name: str,
    version: str | None,
    data_path: Path,
    dataset_name: str,
) -> ValidationRun:
    dataset_sha256 = file_sha256(data_path)  # hashed first: nothing in the database waits on it
    row = version_row(session, model_name, version)
    task_for(row)
    run = ValidationRun(
        model_name=row.name,
        model_version=row.version,
        task=row.task,
        dataset_name=dataset_name[:200],
        dataset_sha256=dataset_sha256,
        created_by_id=actor.user_id,
    )
    session.add(run)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="ai_validation.create",
        action_type="C",
        resource_type="ValidationRun",
        resource_id=run.id,
        purpose="HOPERAT",
        detail={
            "model": row.name,
            "version": row.version,
            "dataset": run.dataset_name,
            "sha256": run.dataset_sha256,
        },
    )
    return run


def execute_validation(
    sessions: Callable[[], Session],
    run_id: str,
    data_path: Path,
    *,
    n_boot: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> ValidationRun:
    """Run the model over the dataset and store the report; a failure is recorded on the run, not raised."""
    with sessions() as session, session.begin():
        run = session.get(ValidationRun, run_id)
        if run is None:
            raise NotFound(f"no validation run {run_id}")
        run.status = "running"
        row = version_row(session, run.model_name, run.model_version)
        task, model = task_for(row), registry.model_of(row)
        model_name, model_version, dataset = run.model_name, run.model_version, run.dataset_name

    last_written = [0.0]

    def progress(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(done, total)
        now = datetime.now(UTC).timestamp()
        if done < total and now - last_written[0] < 0.5:  # the page polls; no need to write every case
            return
        last_written[0] = now
        with sessions() as session, session.begin():
            current = session.get(ValidationRun, run_id)
            if current is not None:
                current.progress_done, current.progress_total = done, total
                current.heartbeat_at = utcnow()

    try:
        data = task.validate(model, data_path, progress)
        summary = validation.validate(data, model.manifest.metrics, n_boot=n_boot)
        created = utcnow()
        html = report.report_html(
            summary, model_name=model_name, model_version=model_version, dataset=dataset, created_at=created
        )
        pdf = report.report_pdf(
            summary, model_name=model_name, model_version=model_version, dataset=dataset, created_at=created
        )
    except Exception as exc:
        log.warning("validation run %s failed: %s", run_id, exc)
        with sessions() as session, session.begin():
            run = session.get(ValidationRun, run_id)
            assert run is not None
            run.status, run.error, run.finished_at = "failed", f"{type(exc).__name__}: {exc}"[:2000], utcnow()
        return _detached(sessions, run_id)
    with sessions() as session, session.begin():
        run = session.get(ValidationRun, run_id)
        assert run is not None
        run.status, run.summary, run.report_html, run.report_pdf = "done", summary.to_json(), html, pdf
        run.progress_done = run.progress_total = int(summary.n)
        run.finished_at = utcnow()
    return _detached(sessions, run_id)


def _detached(sessions: Callable[[], Session], run_id: str) -> ValidationRun:
    with sessions() as session:
        run = session.get(ValidationRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


# ---------------------------------------------------------------------------------------------
# Field performance
# ---------------------------------------------------------------------------------------------


def field_performance(session: Session, model_name: str, settings: AiSettings) -> field.FieldSummary:
    shown = version_row(session, model_name, None)  # drift is judged against the running version's data
    until = utcnow()
    return field.field_summary(
        session,
        model_name,
        since=until - timedelta(days=settings.field_window_days),
        until=until,
        reference=registry.manifest_of(shown).reference,
    )


def check_alerts(session: Session, settings: AiSettings) -> list[AlertRecord]:
    """Raise an alert for each model whose agreement or drift crossed its threshold; clear recovered ones."""
    raised = []
    names = sorted({r.name for r in registry.versions(session)})
    open_alerts: dict[tuple[str, str, str], AlertRecord] = {
        (a.model_name, a.kind, a.subject): a
        for a in session.scalars(select(AlertRecord).where(AlertRecord.cleared_at.is_(None)))
    }
    for name in names:
        summary = field_performance(session, name, settings)
        current = field.alerts(
            summary,
            min_agreement=settings.agreement_alert_below,
            max_psi=settings.drift_alert_psi,
            min_reviewed=settings.alert_min_reviewed,
        )
        seen: set[tuple[str, str, str]] = set()
        for alert in current:
            key: tuple[str, str, str] = (name, alert.kind, alert.feature)
            seen.add(key)
            if key in open_alerts:
                open_alerts[key].value, open_alerts[key].variables = alert.value, dict(alert.variables)
                continue
            record = AlertRecord(
                model_name=name,
                kind=alert.kind,
                subject=alert.feature,
                value=alert.value,
                threshold=alert.threshold,
                message=alert.message,
                variables=dict(alert.variables),
            )
            session.add(record)
            raised.append(record)
            enqueue(
                session,
                "tianfu.ai.field_alert",
                {"model": name, "kind": alert.kind, "feature": alert.feature, "value": alert.value},
            )
        for key, stale in open_alerts.items():
            if key[0] == name and key not in seen:
                stale.cleared_at = utcnow()
    session.flush()
    return raised


def open_alerts(session: Session, model_name: str | None = None) -> list[AlertRecord]:
    query = select(AlertRecord).where(AlertRecord.cleared_at.is_(None)).order_by(AlertRecord.raised_at.desc())
    if model_name is not None:
        query = query.where(AlertRecord.model_name == model_name)
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------
# Inference for other systems
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inference:
    """An inference call ready to run: the task, the active version and its registry row."""

    task: AiTask
    model: ActiveModel
    row: ModelVersion


def prepare_inference(session: Session, task_key: str) -> Inference:
    task = tasks().get(task_key)
    if task is None:
        raise NotFound(f"no inference task {task_key}")
    active = registry.active_model(session, task.model_name)
    if active is None:
        raise Invalid(f"model {task.model_name} is switched off by the hospital's AI governance")
    return Inference(task, active, version_row(session, task.model_name, active.version))


def run_inference(call: Inference, request: Any) -> InferenceResult:
    """The model itself: no database here, so callers run it outside any transaction."""
    try:
        return call.task.infer(call.model, request)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def record_inference(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    call: Inference,
    result: InferenceResult,
    patient_id: str | None,
    caller: str,
) -> str:
    """The call as a model output (its id is returned); an external patient reference only as a hash."""
    reference = f"api:{caller}"
    if result.patient_ref:
        reference += "/ref-sha256:" + hashlib.sha256(result.patient_ref.encode()).hexdigest()[:16]
    recorded = outputs.record_output(
        session,
        audit,
        actor=actor,
        module=call.task.module,
        task=call.task.key,
        model_name=call.task.model_name,
        model_version=call.model.version,
        input_ref=reference[:300],
        output={**result.output, "explanation_kinds": sorted(result.explanation)},
        label=result.label,
        score=result.score,
        patient_id=patient_id,
        input_features=result.input_features,
    )
    return recorded.id


def infer(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    task_key: str,
    request: Any,
    patient_id: str | None,
    caller: str,
) -> tuple[ModelVersion, InferenceResult, str]:
    """Prepare, run and record in the caller's transaction (the demo seed; the API splits the steps)."""
    call = prepare_inference(session, task_key)
    result = run_inference(call, request)
    output_id = record_inference(
        session, audit, actor=actor, call=call, result=result, patient_id=patient_id, caller=caller
    )
    return call.row, result, output_id
