"""Record model outputs and clinicians' feedback; summarise field performance per model.

Every module calls :func:`record_output` for each prediction it shows anyone, so that the AI platform
can tell, per model and version, how often clinicians agree. The records are patient data: each write
is audited, and each output is announced on the bus as ``tianfu.ai.output_recorded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, func, insert, select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import Actor, AuditEntry, AuditLog
from tianfu.core.bus.outbox import enqueue, enqueue_many
from tianfu.core.db import new_id, utcnow
from tianfu.core.model_outputs.models import ModelFeedback, ModelOutput

Verdict = Literal["agree", "partial", "disagree"]


@dataclass(frozen=True)
class NewOutput:
    """One output for :func:`record_outputs`: the arguments of :func:`record_output`."""

    module: str
    task: str
    model_name: str
    model_version: str
    input_ref: str
    output: dict[str, Any]
    label: str = ""
    score: float | None = None
    patient_id: str | None = None
    input_features: dict[str, Any] | None = None


def record_outputs(session: Session, audit: AuditLog, *, actor: Actor, outputs: list[NewOutput]) -> list[str]:
    """:func:`record_output` for many outputs at once (one executemany per table); their ids.

    For a job that scores every monitored patient at the same moment: one by one, the rows and their
    audit records cost more than the scoring.
    """
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": new_id(),
            "module": o.module,
            "task": o.task,
            "model_name": o.model_name,
            "model_version": o.model_version,
            "patient_id": o.patient_id,
            "input_ref": o.input_ref,
            "input_features": o.input_features or {},
            "output": o.output,
            "label": o.label,
            "score": o.score,
            "created_at": now,
            "requested_by_id": actor.user_id,
        }
        for o in outputs
    ]
    if not rows:
        return []
    session.execute(insert(ModelOutput), rows)
    audit.record_many(
        session,
        [
            AuditEntry(
                actor=actor,
                action="ai_output.create",
                action_type="C",
                resource_type="ModelOutput",
                resource_id=row["id"],
                patient_ids=[row["patient_id"]] if row["patient_id"] else [],
                purpose="TREAT",
                detail={"model": row["model_name"], "version": row["model_version"], "task": row["task"]},
            )
            for row in rows
        ],
    )
    enqueue_many(
        session,
        "tianfu.ai.output_recorded",
        [
            {
                "output_id": row["id"],
                "model": row["model_name"],
                "version": row["model_version"],
                "task": row["task"],
                "module": row["module"],
            }
            for row in rows
        ],
    )
    return [row["id"] for row in rows]


def record_output(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    module: str,
    task: str,
    model_name: str,
    model_version: str,
    input_ref: str,
    output: dict[str, Any],
    label: str = "",
    score: float | None = None,
    patient_id: str | None = None,
    input_features: dict[str, Any] | None = None,
) -> ModelOutput:
    row = ModelOutput(
        module=module,
        task=task,
        model_name=model_name,
        model_version=model_version,
        patient_id=patient_id,
        input_ref=input_ref,
        input_features=input_features or {},
        output=output,
        label=label,
        score=score,
        requested_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="ai_output.create",
        action_type="C",
        resource_type="ModelOutput",
        resource_id=row.id,
        patient_ids=[patient_id] if patient_id else [],
        purpose="TREAT",
        detail={"model": model_name, "version": model_version, "task": task},
    )
    enqueue(
        session,
        "tianfu.ai.output_recorded",
        {"output_id": row.id, "model": model_name, "version": model_version, "task": task, "module": module},
    )
    return row


def record_feedback(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    output: ModelOutput,
    verdict: Verdict,
    corrected_label: str = "",
    corrected_output: dict[str, Any] | None = None,
    comment: str = "",
) -> ModelFeedback:
    if actor.user_id is None:
        raise ValueError("feedback needs a clinician")
    if verdict != "agree" and not (corrected_label or corrected_output or comment):
        raise ValueError("a disagreement needs the correct answer or a comment")
    row = ModelFeedback(
        output_id=output.id,
        user_id=actor.user_id,
        verdict=verdict,
        corrected_label=corrected_label,
        corrected_output=corrected_output or {},
        comment=comment,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="ai_feedback.create",
        action_type="C",
        resource_type="ModelOutput",
        resource_id=output.id,
        patient_ids=[output.patient_id] if output.patient_id else [],
        purpose="TREAT",
        detail={"verdict": verdict, "model": output.model_name, "version": output.model_version},
    )
    enqueue(
        session,
        "tianfu.ai.feedback_recorded",
        {"output_id": output.id, "feedback_id": row.id, "verdict": verdict, "model": output.model_name},
    )
    return row


@dataclass(frozen=True)
class ModelUsage:
    model_name: str
    model_version: str
    outputs: int
    reviewed: int
    agreed: float

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.reviewed if self.reviewed else None


def usage_by_model(session: Session) -> list[ModelUsage]:
    """Volume and agreement per model version; a partial agreement counts half."""
    latest = (
        select(
            ModelFeedback.output_id,
            func.max(ModelFeedback.created_at).label("latest"),
        )
        .group_by(ModelFeedback.output_id)
        .subquery()
    )
    verdicts = (
        select(ModelFeedback.output_id, ModelFeedback.verdict)
        .join(
            latest,
            (latest.c.output_id == ModelFeedback.output_id) & (latest.c.latest == ModelFeedback.created_at),
        )
        .subquery()
    )
    rows = session.execute(
        select(
            ModelOutput.model_name,
            ModelOutput.model_version,
            func.count(ModelOutput.id),
            func.count(verdicts.c.verdict),
            func.sum(
                case((verdicts.c.verdict == "agree", 1.0), (verdicts.c.verdict == "partial", 0.5), else_=0.0)
            ),
        )
        .outerjoin(verdicts, verdicts.c.output_id == ModelOutput.id)
        .group_by(ModelOutput.model_name, ModelOutput.model_version)
        .order_by(ModelOutput.model_name, ModelOutput.model_version)
    ).all()
    return [
        ModelUsage(name, version, int(total), int(reviewed), float(agreed or 0.0))
        for name, version, total, reviewed, agreed in rows
    ]
