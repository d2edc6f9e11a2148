"""The AI platform's API (/api/v1/ai/models, /validations, /infer) and pages (/ai).

Reading the registry and field performance needs ``ai_output.usage`` (no patient data is shown:
the disagreement list names outputs, not patients); changing which version runs and running
local validations needs ``ai_model.manage``; calling a model needs ``ai.infer`` and, when the call
names a patient, a care relationship with that patient.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.ai import service
from tianfu.ai.settings import get_ai_settings
from tianfu.ai.tables import ValidationRun
from tianfu.core.audit.service import AuditLog
from tianfu.core.errors import Invalid, NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import RequestModel, ResponseModel
from tianfu.core.i18n import gettext_
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs.service import usage_by_model
from tianfu.core.model_registry import service as registry
from tianfu.core.model_registry.models import ModelVersion
from tianfu.core.patients.service import require_access
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.web.rendering import redirect, render

api = APIRouter(prefix="/api/v1/ai", tags=["ai platform"], responses=PROBLEM_RESPONSES)
pages = APIRouter(prefix="/ai", include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.AI_USAGE_READ))]
Manager = Annotated[Principal, Depends(require(Permission.AI_MODEL_MANAGE))]
Name = Annotated[str, PathParam(max_length=100)]
Version = Annotated[str, PathParam(max_length=64)]
MAX_DATASET_BYTES = 256 * 1024 * 1024
UPLOAD_PATHS = ("/api/v1/ai/validations", "/ai/validate/")  # take datasets of up to MAX_DATASET_BYTES


class VersionOut(ResponseModel):
    name: str
    version: str
    module: str
    task: str
    source: str
    sha256: str
    active: bool
    registered_at: datetime
    changed_at: datetime
    title: str
    intended_use: str
    training_data: str
    data_licence: str
    trained_on: str
    metrics: dict[str, float]
    limits: list[str]

    @classmethod
    def of(cls, row: ModelVersion) -> VersionOut:
        m = row.manifest
        return cls(
            name=row.name,
            version=row.version,
            module=row.module,
            task=row.task,
            source=row.source,
            sha256=row.sha256,
            active=row.active,
            registered_at=row.registered_at,
            changed_at=row.changed_at,
            title=m["title"],
            intended_use=m["intended_use"],
            training_data=m["training_data"],
            data_licence=m["data_licence"],
            trained_on=m["trained_on"],
            metrics=m["metrics"],
            limits=m.get("limits", []),
        )


class ModelOut(ResponseModel):
    name: str
    active_version: str | None
    versions: list[VersionOut]
    card: dict[str, Any]


class SwitchIn(RequestModel):
    reason: str = Field(min_length=3, max_length=500, description="Why; kept in the audit trail.")


class RunOut(ResponseModel):
    id: str
    model_name: str
    model_version: str
    task: str
    dataset_name: str
    dataset_sha256: str
    status: str
    progress_done: int
    progress_total: int
    error: str
    summary: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class InferenceOut(ResponseModel):
    output_id: str = Field(description="The recorded model output; clinicians' feedback refers to it.")
    task: str
    model_name: str
    model_version: str
    status: str = Field(
        "preliminary", description="Always preliminary: AI output is never a signed diagnosis."
    )
    label: str
    score: float | None
    output: dict[str, Any]
    explanation: dict[str, Any]
    limits: list[str]
    intended_use: str
    safety_note: str = service.SAFETY_NOTE


def _model(session: Session, name: str) -> tuple[list[ModelVersion], ModelVersion]:
    return registry.versions(session, name), service.version_row(session, name, None)


def _model_out(session: Session, name: str) -> ModelOut:
    rows, shown = _model(session, name)
    active = next((r.version for r in rows if r.active), None)
    return ModelOut(
        name=name,
        active_version=active,
        versions=[VersionOut.of(r) for r in rows],
        card=shown.manifest["card"],
    )


@api.get("/models", summary="Every registered model version, with its card's facts")
def list_models(session: DbDep, _: Reader) -> list[VersionOut]:
    rows = registry.versions(session)
    session.commit()
    return [VersionOut.of(r) for r in rows]


@api.get("/models/{name}", summary="One model: its versions, which is active, and its card")
def read_model(session: DbDep, _: Reader, name: Name) -> ModelOut:
    out = _model_out(session, name)
    session.commit()
    return out


@api.post(
    "/models/{name}/versions/{version}/activate", summary="Make a version the one modules run (or roll back)"
)
def activate(
    kernel: KernelDep, session: DbDep, principal: Manager, name: Name, version: Version, body: SwitchIn
) -> ModelOut:
    registry.activate(
        session, kernel.audit, actor=principal.actor, name=name, version=version, reason=body.reason
    )
    session.commit()
    return _model_out(session, name)


@api.post("/models/{name}/deactivate", summary="Switch a model off; its module stops running it")
def deactivate(kernel: KernelDep, session: DbDep, principal: Manager, name: Name, body: SwitchIn) -> ModelOut:
    registry.deactivate(session, kernel.audit, actor=principal.actor, name=name, reason=body.reason)
    session.commit()
    return _model_out(session, name)


def _field(kernel: Kernel, session: Session, principal: Principal, name: str) -> dict[str, Any]:
    settings = get_ai_settings()
    summary = service.field_performance(session, name, settings)
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="ai_field.read",
        action_type="R",
        resource_type="ModelOutput",
        purpose=principal.purpose,
        detail={"model": name, "aggregate": True},
    )
    data = summary.to_json()
    for case in data["disagreements"]:  # the registry is read without patient access: no names, no notes
        case.pop("patient_id", None)
        case.pop("comment", None)
    return {
        "summary": data,
        "alerts": [
            {
                "kind": a.kind,
                "subject": a.subject,
                "value": a.value,
                "threshold": a.threshold,
                "message": gettext_(a.message, **a.variables),
                "raised_at": a.raised_at.isoformat(),
            }
            for a in service.open_alerts(session, name)
        ],
        "thresholds": {
            "agreement_alert_below": settings.agreement_alert_below,
            "drift_alert_psi": settings.drift_alert_psi,
            "alert_min_reviewed": settings.alert_min_reviewed,
            "window_days": settings.field_window_days,
        },
    }


@api.get(
    "/models/{name}/field", summary="Field performance: volume, agreement over time, disagreements, drift"
)
def field_performance(kernel: KernelDep, session: DbDep, principal: Reader, name: Name) -> dict[str, Any]:
    out = _field(kernel, session, principal, name)
    session.commit()
    return out


# ---------------------------------------------------------------------------------------------
# Local validation
# ---------------------------------------------------------------------------------------------


def _save_upload(source: BinaryIO, filename: str, folder: Path) -> Path:
    """Copy the spooled upload under ``<var_dir>/ai/uploads`` (cleared at start) for the worker to read."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "".join(Path(filename).suffixes)[-20:] or ".bin"
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    path = Path(handle.name)
    if path.stat().st_size == 0:
        path.unlink()
        raise Invalid("the dataset file is empty")
    return path


def _start(kernel: Kernel, run_id: str, path: Path) -> None:
    """Validation runs beside the request; the uploaded file is deleted when it ends."""

    def work() -> None:
        try:
            service.execute_validation(
                kernel.sessions, run_id, path, n_boot=get_ai_settings().validation_bootstrap
            )
        finally:
            path.unlink(missing_ok=True)

    threading.Thread(target=work, name=f"validation-{run_id[:8]}", daemon=True).start()


async def _create_run(
    kernel: Kernel, session: Session, principal: Principal, name: str, version: str | None, file: UploadFile
) -> ValidationRun:
    # The sign-in check opened a transaction; on SQLite it holds the one write lock, which nobody else
    # should wait on while a large file is copied and hashed.
    session.rollback()
    filename = file.filename or "upload"
    path = await run_in_threadpool(
        _save_upload, file.file, filename, service.uploads_dir(kernel.settings.var_dir)
    )

    def register() -> ValidationRun:
        with kernel.sessions() as own, own.begin():
            run = service.create_validation(
                own,
                kernel.audit,
                actor=principal.actor,
                model_name=name,
                version=version or None,
                data_path=path,
                dataset_name=filename,
            )
            own.flush()
            own.expunge(run)
            return run

    try:
        run = await run_in_threadpool(register)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _start(kernel, run.id, path)
    return run


@api.post(
    "/validations",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Validate a model version on a labelled local dataset (runs in the background)",
)
async def create_validation(
    kernel: KernelDep,
    session: DbDep,
    principal: Manager,
    model: Annotated[str, Form(max_length=100)],
    file: Annotated[
        UploadFile, File(description="A dataset in the task's format (see the task's data_format).")
    ],
    version: Annotated[str, Form(max_length=64)] = "",
) -> RunOut:
    run = await _create_run(kernel, session, principal, model, version, file)
    return RunOut.model_validate(run)


def _run(
    session: Session, audit: AuditLog, principal: Principal, run_id: str, *, audited: bool = True
) -> ValidationRun:
    run = session.get(ValidationRun, run_id)
    if run is None:
        raise NotFound(f"no validation run {run_id}")
    if audited:
        audit.record(
            session,
            actor=principal.actor,
            action="ai_validation.read",
            action_type="R",
            resource_type="ValidationRun",
            resource_id=run.id,
            purpose=principal.purpose,
        )
    return run


@api.get("/validations", summary="Validation runs, newest first")
def list_validations(
    session: DbDep, _: Reader, model: Annotated[str | None, Query(max_length=100)] = None
) -> list[RunOut]:
    query = select(ValidationRun).order_by(ValidationRun.created_at.desc()).limit(100)
    if model:
        query = query.where(ValidationRun.model_name == model)
    return [RunOut.model_validate(r) for r in session.scalars(query)]


@api.get("/validations/{run_id}", summary="A validation run: progress, then metrics with 95 % CIs")
def read_validation(kernel: KernelDep, session: DbDep, principal: Reader, run_id: Name) -> RunOut:
    run = _run(session, kernel.audit, principal, run_id)
    session.commit()
    return RunOut.model_validate(run)


def _report(session: Session, audit: AuditLog, principal: Principal, run_id: str, kind: str) -> Response:
    run = _run(session, audit, principal, run_id)
    session.commit()
    if run.status != "done":
        raise NotFound(f"validation run {run_id} has no report yet ({run.status})")
    filename = f"validation-{run.model_name}-{run.model_version}-{run.id[:8]}.{kind}"
    if kind == "pdf":
        return Response(
            run.report_pdf or b"",
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return HTMLResponse(
        run.report_html,
        headers={
            "Content-Disposition": f'inline; filename="{filename}"',
            # Self-contained (charts are data: URIs): nothing in it may run or load. Our own page frames it.
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@api.get(
    "/validations/{run_id}/report.html",
    summary="The validation report as one HTML file",
    response_class=HTMLResponse,
)
def report_html(kernel: KernelDep, session: DbDep, principal: Reader, run_id: Name) -> Response:
    return _report(session, kernel.audit, principal, run_id, "html")


@api.get(
    "/validations/{run_id}/report.pdf",
    summary="The validation report as PDF",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def report_pdf(kernel: KernelDep, session: DbDep, principal: Reader, run_id: Name) -> Response:
    return _report(session, kernel.audit, principal, run_id, "pdf")


# ---------------------------------------------------------------------------------------------
# Inference: one route per task, built once every module is loaded
# ---------------------------------------------------------------------------------------------


def inference_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/ai/infer", tags=["ai inference"], responses=PROBLEM_RESPONSES)
    for task in service.tasks().values():
        router.add_api_route(
            f"/{task.key}",
            _inference_endpoint(task.key, task.request_model),
            methods=["POST"],
            summary=f"{task.title}: run the active model",
            description=f"{task.summary}\n\nModel: `{task.model_name}` (whichever version is active). "
            "Each call is recorded as a model output. The answer is decision support, never a diagnosis.",
            response_model=InferenceOut,
            name=f"infer_{task.key.replace('-', '_')}",
            openapi_extra={"requestBody": {"content": {"application/json": {"example": dict(task.example)}}}}
            if task.example
            else None,
        )
    return router


def _inference_endpoint(task_key: str, body_model: type) -> Any:
    def endpoint(
        kernel: KernelDep,
        session: DbDep,
        principal: Annotated[Principal, Depends(require(Permission.AI_INFER))],
        body: body_model,  # type: ignore[valid-type]
        patient_id: Annotated[
            str | None, Query(max_length=36, description="A Tianfu patient the call is for")
        ] = None,
    ) -> InferenceOut:
        if patient_id is not None:
            require_access(session, kernel.audit, principal, patient_id, action="ai.infer")
        call = service.prepare_inference(session, task_key)
        session.commit()  # no transaction (on SQLite: the one write lock) while the model runs
        result = service.run_inference(call, body)
        output_id = service.record_inference(
            session,
            kernel.audit,
            actor=principal.actor,
            call=call,
            result=result,
            patient_id=patient_id,
            caller=principal.actor.username,
        )
        session.commit()
        row = call.row
        manifest = row.manifest
        return InferenceOut(
            output_id=output_id,
            task=task_key,
            model_name=row.name,
            model_version=row.version,
            label=result.label,
            score=result.score,
            output=result.output,
            explanation=result.explanation,
            limits=manifest.get("limits", []),
            intended_use=manifest["intended_use"],
        )

    endpoint.__annotations__["body"] = body_model  # a real class: the string could not be resolved
    return endpoint


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


@pages.get("")
def registry_page(request: Request, session: DbDep, _: Reader) -> HTMLResponse:
    rows = registry.versions(session)
    models: dict[str, list[ModelVersion]] = {}
    for row in rows:
        models.setdefault(row.name, []).append(row)
    usage: dict[str, dict[str, float]] = {}
    for u in usage_by_model(session):
        entry = usage.setdefault(u.model_name, {"outputs": 0, "reviewed": 0, "agreed": 0.0})
        entry["outputs"] += u.outputs
        entry["reviewed"] += u.reviewed
        entry["agreed"] += u.agreed
    alerts = {a.model_name for a in service.open_alerts(session)}
    session.commit()
    return render(
        request,
        "ai/registry.html",
        {"models": models, "usage": usage, "alerts": alerts, "tasks": service.tasks()},
    )


@pages.get("/models/{name}")
def model_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, name: Name
) -> HTMLResponse:
    rows, shown = _model(session, name)
    field_data = _field(kernel, session, principal, name)
    runs = list(
        session.scalars(
            select(ValidationRun)
            .where(ValidationRun.model_name == name)
            .order_by(ValidationRun.created_at.desc())
            .limit(20)
        )
    )
    task = service.tasks().get(shown.task)
    session.commit()
    return render(
        request,
        "ai/model.html",
        {
            "name": name,
            "rows": rows,
            "shown": shown,
            "card": shown.manifest,
            "field": field_data,
            "runs": runs,
            "task": task,
        },
    )


@pages.post("/models/{name}/activate")
def activate_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Manager,
    name: Name,
    version: Annotated[str, Form(max_length=64)],
    reason: Annotated[str, Form(max_length=500)],
) -> Response:
    registry.activate(session, kernel.audit, actor=principal.actor, name=name, version=version, reason=reason)
    session.commit()
    return redirect(f"/ai/models/{name}", f"已启用 {version} / version {version} is active")


@pages.post("/models/{name}/deactivate")
def deactivate_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Manager,
    name: Name,
    reason: Annotated[str, Form(max_length=500)],
) -> Response:
    registry.deactivate(session, kernel.audit, actor=principal.actor, name=name, reason=reason)
    session.commit()
    return redirect(f"/ai/models/{name}", "已停用 / switched off")


@pages.post("/validate/{name}")
async def validate_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Manager,
    name: Name,
    file: Annotated[UploadFile, File()],
    version: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    run = await _create_run(kernel, session, principal, name, version, file)
    return redirect(f"/ai/validations/{run.id}")


@pages.get("/validations/{run_id}")
def validation_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, run_id: Name
) -> HTMLResponse:
    polling = bool(request.headers.get("hx-request"))  # the progress fragment, every second: read once
    run = _run(session, kernel.audit, principal, run_id, audited=not polling)
    session.commit()
    template = "ai/_validation_status.html" if polling else "ai/validation.html"
    return render(request, template, {"run": run})
