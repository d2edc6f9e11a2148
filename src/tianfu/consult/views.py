"""Remote consultation's API (/api/v1/consult); its pages are in :mod:`tianfu.consult.pages`.

Every route requires a permission; whether the caller takes part in the consultation is checked by the
service (404 for everybody else). Auditors read through /api/v1/consult/review, read-only and audited.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import Field
from sqlalchemy.orm import Session

from tianfu.consult import service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import Consultation, ConsultConsent, ConsultMessage
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDateTime, RequestModel, ResponseModel
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

api = APIRouter(prefix="/api/v1/consult", tags=["consult"], responses=PROBLEM_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Writer = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Id = Annotated[str, Path(max_length=64)]
Text = Annotated[str, Field(max_length=4000)]
# The transitions fired by a plain action; complete (by signing) and record-decision have their own routes.
ActionName = Literal["submit", "receive", "accept", "reject", "start", "hold", "resume", "cancel", "fail"]


class InvitationIn(RequestModel):
    reason: Text | None = None
    purpose: Text | None = None
    case_summary: Annotated[str, Field(max_length=20000)] | None = None
    specialty: Annotated[str, Field(max_length=100)] | None = None
    title: int | None = Field(None, ge=1, le=4, description="1 住院医师 … 4 主任医师 (minimum wanted)")
    time_frame_earliest: IsoDateTime | None = None
    time_frame_latest: IsoDateTime | None = None
    priority: Literal["routine", "urgent", "asap", "stat"] | None = None
    mode: Literal["store-and-forward", "synchronous"] | None = None
    scheduled_at: IsoDateTime | None = None
    accompanying_physician_id: Annotated[str, Field(max_length=36)] | None = None

    def fields(self) -> service.DraftFields:
        return service.DraftFields(**self.model_dump())


class CreateIn(InvitationIn):
    patient_id: str = Field(max_length=36)
    invited_institution_id: str = Field(max_length=36)


class ActionIn(RequestModel):
    reason: Text | None = None
    consultant_id: str | None = Field(
        None, max_length=36, description="accept: whom to assign (default: you)"
    )


class MessageIn(RequestModel):
    body: str = Field(min_length=1, max_length=8000)
    in_response_to_id: str | None = Field(None, max_length=36)


class OpinionIn(RequestModel):
    findings: Annotated[str, Field(max_length=20000)] = ""
    diagnosis: Annotated[str, Field(max_length=4000)] = ""
    opinion: str = Field(min_length=1, max_length=20000, description="诊疗意见")
    recommendations: Annotated[str, Field(max_length=20000)] = ""

    def content(self) -> dict[str, str]:
        return self.model_dump()


class AmendIn(OpinionIn):
    reason: str = Field(min_length=1, max_length=2000)


class DecisionIn(RequestModel):
    decision: str = Field(min_length=1, max_length=8000)


class ConsentIn(RequestModel):
    kind: Literal["treatment", "patient-privacy"]
    signed_form_ref: str = Field(min_length=1, max_length=300, description="the signed written form")
    signed_by: Literal["patient", "guardian", "close-relative"] = "patient"
    signer_name: str = Field("", max_length=100)
    granted_at: IsoDateTime | None = None


class WithdrawIn(RequestModel):
    reason: str = Field("", max_length=2000)


class StatusChangeOut(ResponseModel):
    action: str
    source: str
    target: str
    actor_id: str
    reason: str | None
    at: datetime


class ConsultationOut(ResponseModel):
    id: str
    patient_id: str
    inviting_institution_id: str
    requester_id: str
    invited_institution_id: str
    reason: str
    purpose: str
    case_summary: str
    specialty: str
    title: int | None
    time_frame_earliest: datetime | None
    time_frame_latest: datetime | None
    priority: str
    mode: str
    scheduled_at: datetime | None
    status: str
    business_status: str
    status_reason: str | None
    assigned_consultant_id: str | None
    submitted_at: datetime | None
    received_at: datetime | None
    responded_at: datetime | None
    response_stage: str | None
    response_due_at: datetime | None
    response_escalate_at: datetime | None
    decision_text: str | None
    decided_at: datetime | None
    created_at: datetime
    actions: list[str] = Field(default_factory=list)
    history: list[StatusChangeOut] = Field(default_factory=list)


class ConsultationListOut(ResponseModel):
    items: list[ConsultationOut]


class MessageOut(ResponseModel):
    id: str
    author_id: str
    author_institution_id: str | None
    in_response_to_id: str | None
    body: str
    sent_at: datetime


class ConsentOut(ResponseModel):
    id: str
    kind: str
    signed_by: str
    signer_name: str
    signed_form_ref: str
    recipient_institution_id: str | None
    granted_at: datetime
    withdrawn_at: datetime | None
    withdrawal_reason: str


class VersionOut(ResponseModel):
    version: int
    content: dict[str, Any]
    amendment_reason: str | None
    signer_id: str
    signed_at: datetime
    algorithm: str
    content_hash: str
    public_key_fingerprint: str
    valid: bool
    problems: list[str]


class OpinionOut(ResponseModel):
    signed: bool
    valid: bool
    problems: list[str]
    versions: list[VersionOut]


class SectionOut(ResponseModel):
    module: str
    title: str
    items: list[dict[str, Any]]
    links: list[dict[str, str]]


class CasePacketOut(ResponseModel):
    consultation_id: str
    patient_id: str
    case_summary: str
    sections: list[SectionOut]


def consultation_out(row: Consultation, history: list[StatusChangeOut] | None = None) -> ConsultationOut:
    out = ConsultationOut.model_validate(row)
    out.history = history or []
    return out


def _detail(session: Session, row: Consultation, principal: Principal) -> ConsultationOut:
    out = consultation_out(
        row, history=[StatusChangeOut.model_validate(h) for h in service.history(session, row.id)]
    )
    snapshot = service.snapshot(session, row)
    out.actions = [a.value for a in wf.available_actions(snapshot, service.actor_for(principal))]
    return out


@api.post("/consultations", status_code=201, summary="Create a draft consultation request")
def create(kernel: KernelDep, session: DbDep, principal: Writer, body: CreateIn) -> ConsultationOut:
    row = service.create_draft(
        session,
        kernel.audit,
        principal,
        patient_id=body.patient_id,
        invited_institution_id=body.invited_institution_id,
        fields=InvitationIn.model_validate(
            body.model_dump(exclude={"patient_id", "invited_institution_id"})
        ).fields(),
    )
    out = _detail(session, row, principal)
    session.commit()
    return out


@api.get("/consultations/mine", summary="My requests (inviting physician)")
def mine(kernel: KernelDep, session: DbDep, principal: Reader) -> ConsultationListOut:
    rows = service.my_requests(session, kernel.audit, principal)
    out = ConsultationListOut(items=[consultation_out(r) for r in rows])
    session.commit()
    return out


@api.get("/consultations/incoming", summary="The invited institution's queue, earliest deadline first")
def queue(kernel: KernelDep, session: DbDep, principal: Reader) -> ConsultationListOut:
    rows = service.incoming(session, kernel.audit, principal)
    out = ConsultationListOut(items=[consultation_out(r) for r in rows])
    session.commit()
    return out


@api.get("/consultations/{consultation_id}", summary="A consultation with its history and allowed actions")
def read(kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id) -> ConsultationOut:
    row = service.get(session, kernel.audit, principal, consultation_id)
    out = _detail(session, row, principal)
    session.commit()
    return out


@api.patch("/consultations/{consultation_id}", summary="Edit the draft (or, once accepted, the scheduling)")
def update(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: InvitationIn
) -> ConsultationOut:
    row = service.update_draft(session, kernel.audit, principal, consultation_id, body.fields())
    out = _detail(session, row, principal)
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/actions/{action}",
    summary="Fire a transition: submit, receive, accept (assign), reject, start, hold, resume, cancel, fail",
)
def act(
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    action: ActionName,
    body: ActionIn,
) -> ConsultationOut:
    row = service.transition(
        session,
        kernel.audit,
        principal,
        consultation_id,
        wf.Action(action),
        reason=body.reason,
        consultant_id=body.consultant_id,
    )
    out = _detail(session, row, principal)
    session.commit()
    return out


@api.post("/consultations/{consultation_id}/decision", summary="The inviting physician's decision (TC-08)")
def decide(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: DecisionIn
) -> ConsultationOut:
    row = service.transition(
        session, kernel.audit, principal, consultation_id, wf.Action.RECORD_DECISION, decision=body.decision
    )
    out = _detail(session, row, principal)
    session.commit()
    return out


@api.get("/consultations/{consultation_id}/messages", summary="The discussion, oldest first")
def list_messages(
    kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> list[MessageOut]:
    rows: list[ConsultMessage] = list(service.messages(session, kernel.audit, principal, consultation_id))
    out = [MessageOut.model_validate(m) for m in rows]
    session.commit()
    return out


@api.post("/consultations/{consultation_id}/messages", status_code=201, summary="Post to the discussion")
def post_message(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: MessageIn
) -> MessageOut:
    message = service.post_message(
        session,
        kernel.audit,
        principal,
        consultation_id,
        body=body.body,
        in_response_to_id=body.in_response_to_id,
    )
    out = MessageOut.model_validate(message)
    session.commit()
    return out


def _opinion_out(verified: service.VerifiedOpinion | None) -> OpinionOut:
    if verified is None:
        return OpinionOut(signed=False, valid=False, problems=[], versions=[])
    versions = []
    for row, result in zip(verified.rows, verified.chain.versions, strict=True):
        try:
            content = json.loads(row.canonical_content)
        except ValueError:
            content = {}
        versions.append(
            VersionOut(
                version=row.version,
                content=content if isinstance(content, dict) else {},
                amendment_reason=row.amendment_reason,
                signer_id=row.signer_id,
                signed_at=row.signed_at,
                algorithm=row.algorithm,
                content_hash=row.content_hash,
                public_key_fingerprint=row.public_key_fingerprint,
                valid=result.valid,
                problems=list(result.problems),
            )
        )
    chain = verified.chain
    return OpinionOut(signed=True, valid=chain.valid, problems=list(chain.problems), versions=versions)


@api.get("/consultations/{consultation_id}/opinion", summary="The signed opinion, verified on this read")
def read_opinion(kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id) -> OpinionOut:
    out = _opinion_out(service.read_opinion(session, kernel.audit, principal, consultation_id))
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/opinion",
    status_code=201,
    summary="Sign the opinion (the assigned consultant); the consultation completes",
)
def sign_opinion(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: OpinionIn
) -> OpinionOut:
    service.sign_opinion(session, kernel.audit, kernel.secret_box, principal, consultation_id, body.content())
    out = _opinion_out(service.verified_opinion(session, consultation_id))
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/opinion/amendments",
    status_code=201,
    summary="Amend the signed opinion: a new signed version, the old one kept",
)
def amend_opinion(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: AmendIn
) -> OpinionOut:
    content = body.content()
    reason = content.pop("reason")
    service.amend_opinion(
        session, kernel.audit, kernel.secret_box, principal, consultation_id, content, reason
    )
    out = _opinion_out(service.verified_opinion(session, consultation_id))
    session.commit()
    return out


@api.get("/consultations/{consultation_id}/consents", summary="The patient's consents for this consultation")
def list_consents(
    kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> list[ConsentOut]:
    rows: list[ConsultConsent] = list(
        service.list_consents(session, kernel.audit, principal, consultation_id)
    )
    out = [ConsentOut.model_validate(c) for c in rows]
    session.commit()
    return out


@api.post("/consultations/{consultation_id}/consents", status_code=201, summary="Record a signed consent")
def record_consent(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: ConsentIn
) -> ConsentOut:
    consent = service.record_consent(
        session,
        kernel.audit,
        principal,
        consultation_id,
        kind=body.kind,
        signed_form_ref=body.signed_form_ref,
        signed_by=body.signed_by,
        signer_name=body.signer_name,
        granted_at=body.granted_at,
    )
    out = ConsentOut.model_validate(consent)
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/consents/{consent_id}/withdraw",
    summary="Record the patient's withdrawal of a consent",
)
def withdraw_consent(
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    consent_id: Id,
    body: WithdrawIn,
) -> ConsentOut:
    consent = service.withdraw_consent(
        session, kernel.audit, principal, consultation_id, consent_id, body.reason
    )
    out = ConsentOut.model_validate(consent)
    session.commit()
    return out


@api.get(
    "/consultations/{consultation_id}/case-packet",
    summary="What the installed modules know about the patient (triage, vital signs, imaging …)",
)
def read_case_packet(
    kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> CasePacketOut:
    sections = service.read_case_packet(session, kernel.audit, principal, consultation_id)
    row = service.load(session, principal, consultation_id)
    out = CasePacketOut(
        consultation_id=row.id,
        patient_id=row.patient_id,
        case_summary=row.case_summary,
        sections=[SectionOut(**s.to_json()) for s in sections],
    )
    session.commit()
    return out


@api.get("/review/consultations", summary="Auditor: every consultation (read-only, audited)")
def review_list(kernel: KernelDep, session: DbDep, principal: Auditor) -> ConsultationListOut:
    rows = service.review_list(session, kernel.audit, principal)
    out = ConsultationListOut(items=[consultation_out(r) for r in rows])
    session.commit()
    return out


@api.get("/review/consultations/{consultation_id}", summary="Auditor: one consultation with its history")
def review_read(
    kernel: KernelDep, session: DbDep, principal: Auditor, consultation_id: Id
) -> ConsultationOut:
    row = service.review_get(session, kernel.audit, principal, consultation_id)
    out = consultation_out(
        row, history=[StatusChangeOut.model_validate(h) for h in service.history(session, row.id)]
    )
    session.commit()
    return out
