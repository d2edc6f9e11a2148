"""/api/v1/ai: read model outputs, give feedback on them, and see per-model usage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from tianfu.core.errors import Invalid, NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import Page, RequestModel, ResponseModel
from tianfu.core.model_outputs import service
from tianfu.core.model_outputs.models import ModelOutput
from tianfu.core.patients.models import Patient
from tianfu.core.patients.service import require_access
from tianfu.core.security import access
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

router = APIRouter(prefix="/api/v1/ai", responses=PROBLEM_RESPONSES)

OutputReader = Annotated[Principal, Depends(require(Permission.AI_OUTPUT_READ))]


class FeedbackOut(ResponseModel):
    id: str
    user_id: str
    verdict: str
    corrected_label: str
    corrected_output: dict[str, Any]
    comment: str
    created_at: datetime


class ModelOutputOut(ResponseModel):
    id: str
    module: str
    task: str
    model_name: str
    model_version: str
    patient_id: str | None
    input_ref: str
    output: dict[str, Any]
    label: str
    score: float | None
    created_at: datetime
    feedback: list[FeedbackOut]


class FeedbackIn(RequestModel):
    verdict: Literal["agree", "partial", "disagree"]
    corrected_label: str = ""
    corrected_output: dict[str, Any] = Field(default_factory=dict)
    comment: str = ""


class UsageOut(ResponseModel):
    model_name: str
    model_version: str
    outputs: int
    reviewed: int
    agreement_rate: float | None


def _output_for(
    session: Session, kernel_audit: Any, principal: Principal, output_id: str, action: str
) -> ModelOutput:
    output = session.get(ModelOutput, output_id)
    if output is None:
        raise NotFound(f"no model output {output_id}")
    if output.patient_id:
        require_access(session, kernel_audit, principal, output.patient_id, action=action)
    return output


@router.get("/outputs", tags=["ai"], summary="Model outputs for the patients you care for")
def list_outputs(
    kernel: KernelDep,
    session: DbDep,
    principal: OutputReader,
    model: Annotated[str | None, Query(max_length=100)] = None,
    patient_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page[ModelOutputOut]:
    query = (
        select(ModelOutput)
        .join(Patient, Patient.id == ModelOutput.patient_id)
        .where(access.visible_patients(principal))
    )
    if model:
        query = query.where(ModelOutput.model_name == model)
    if patient_id:
        query = query.where(ModelOutput.patient_id == patient_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(ModelOutput.feedback))
        .order_by(ModelOutput.created_at.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="ai_output.search",
        action_type="R",
        resource_type="ModelOutput",
        patient_ids=[r.patient_id for r in rows if r.patient_id],
        purpose=principal.purpose,
        detail={"returned": len(rows)},
    )
    session.commit()
    return Page(
        items=[ModelOutputOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/outputs/{output_id}", tags=["ai"], summary="One model output with its feedback")
def read_output(kernel: KernelDep, session: DbDep, principal: OutputReader, output_id: str) -> ModelOutputOut:
    output = _output_for(session, kernel.audit, principal, output_id, "ai_output.read")
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="ai_output.read",
        action_type="R",
        resource_type="ModelOutput",
        resource_id=output.id,
        patient_ids=[output.patient_id] if output.patient_id else [],
        purpose=principal.purpose,
    )
    session.commit()
    return ModelOutputOut.model_validate(output)


@router.post(
    "/outputs/{output_id}/feedback",
    tags=["ai"],
    status_code=status.HTTP_201_CREATED,
    summary="Agree with or correct a model output",
)
def give_feedback(
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.AI_FEEDBACK))],
    output_id: str,
    body: FeedbackIn,
) -> FeedbackOut:
    output = _output_for(session, kernel.audit, principal, output_id, "ai_feedback.create")
    try:
        feedback = service.record_feedback(
            session,
            kernel.audit,
            actor=principal.actor,
            output=output,
            verdict=body.verdict,
            corrected_label=body.corrected_label,
            corrected_output=body.corrected_output,
            comment=body.comment,
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    session.commit()
    return FeedbackOut.model_validate(feedback)


@router.get("/usage", tags=["ai"], summary="Per model version: outputs, reviews, agreement rate")
def usage(
    session: DbDep, _: Annotated[Principal, Depends(require(Permission.AI_USAGE_READ))]
) -> list[UsageOut]:
    return [
        UsageOut(
            model_name=u.model_name,
            model_version=u.model_version,
            outputs=u.outputs,
            reviewed=u.reviewed,
            agreement_rate=u.agreement_rate,
        )
        for u in service.usage_by_model(session)
    ]
