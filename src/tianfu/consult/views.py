"""Remote consultation's API (/api/v1/consult); its pages are in :mod:`tianfu.consult.pages`.

Every route requires a permission; whether the caller takes part in the consultation is checked by the
service (404 for everybody else). Auditors read through /api/v1/consult/review, read-only and audited
(they may also place a legal hold). Institution administrators (``user.manage``) manage agreements,
qualifications, legal holds and entered-in-error for their own institution's side.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy.orm import Session

from tianfu.consult import admin, attachments, scheduling, service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import (
    ConsultAppointment,
    Consultation,
    ConsultAttachment,
    ConsultConsent,
    ConsultMessage,
)
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDateTime, RequestModel, ResponseModel
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

api = APIRouter(prefix="/api/v1/consult", tags=["consult"], responses=PROBLEM_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Writer = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Admin = Annotated[Principal, Depends(require(Permission.USER_MANAGE))]
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
    attachment_ids: list[Annotated[str, Field(max_length=36)]] = Field(
        default_factory=list, max_length=20, description="attachments of this consultation the message cites"
    )


class ReasonIn(RequestModel):
    reason: str = Field(min_length=1, max_length=2000)


class LegalHoldIn(RequestModel):
    hold: bool = Field(description="true places the hold (封存), false lifts it")
    reason: str = Field(min_length=1, max_length=2000)


class ScheduleIn(RequestModel):
    start: IsoDateTime
    end: IsoDateTime
    note: str = Field("", max_length=2000)


class ScheduleResponseIn(RequestModel):
    accept: bool


class AgreementIn(RequestModel):
    other_institution_id: str = Field(max_length=36)
    title: str = Field(min_length=1, max_length=200)
    valid_from: IsoDateTime
    valid_until: IsoDateTime | None = None
    document_ref: str = Field("", max_length=300, description="the signed agreement (scan, archive id)")


class QualificationIn(RequestModel):
    user_id: str = Field(max_length=36)
    specialties: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=1, max_length=20
    )
    title: int = Field(ge=1, le=4, description="1 住院医师 … 4 主任医师")
    independent_practice_since: date
    licence_number: str | None = Field(None, max_length=64, description="default: the staff directory's")
    licence_valid_until: date | None = None
    licence_suspended: bool = False


class OpinionIn(RequestModel):
    findings: Annotated[str, Field(max_length=20000)] = ""
    diagnosis: Annotated[str, Field(max_length=4000)] = ""
    opinion: str = Field(min_length=1, max_length=20000, description="诊疗意见")
    recommendations: Annotated[str, Field(max_length=20000)] = ""
    signing_pin: str = Field(
        min_length=1,
        max_length=200,
        description="The consultant's signing PIN (签名PIN, not the login password): it opens their key.",
    )
    signing_pin_confirmation: str | None = Field(
        None,
        max_length=200,
        description="The PIN again: required the first time (setting the PIN) and with new_signing_key.",
    )
    new_signing_key: bool = Field(
        False,
        description="Enrol a new key under a new PIN (a locked or forgotten one); old signatures stay valid.",
    )
    password: str | None = Field(
        None, max_length=200, description="The login password: required with new_signing_key."
    )

    def content(self) -> dict[str, str]:
        return self.model_dump(
            exclude={"signing_pin", "signing_pin_confirmation", "new_signing_key", "password"}
        )

    def pin(self, kernel: Kernel, session: Session, principal: Principal) -> dict[str, Any]:
        confirmed = self.new_signing_key and service.confirm_login_password(
            session, kernel.auth, principal, self.password or ""
        )
        if self.new_signing_key and not confirmed:
            raise Forbidden("a new signing key needs your login password", code="password_required")
        return {
            "pin": self.signing_pin,
            "pin_confirmation": self.signing_pin_confirmation,
            "new_key": self.new_signing_key,
            "password_confirmed": confirmed,
        }


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


class NoticeOut(ResponseModel):
    stage: str
    kind: str
    due_at: datetime
    sent_at: datetime


class AppointmentOut(ResponseModel):
    id: str
    proposed_by_id: str
    proposer_institution_id: str | None
    start: datetime
    end: datetime
    note: str
    status: str
    responded_by_id: str | None
    responded_at: datetime | None
    created_at: datetime


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
    retain_until: datetime | None = None
    legal_hold: bool = False
    legal_hold_reason: str = ""
    overdue: bool = Field(False, description="a response is owed and its deadline has passed")
    actions: list[str] = Field(default_factory=list)
    history: list[StatusChangeOut] = Field(default_factory=list)
    deadline_notices: list[NoticeOut] = Field(default_factory=list)
    appointments: list[AppointmentOut] = Field(default_factory=list)


class ConsultationListOut(ResponseModel):
    items: list[ConsultationOut]


class MessageOut(ResponseModel):
    id: str
    author_id: str
    author_institution_id: str | None
    in_response_to_id: str | None
    body: str
    attachment_ids: list[str] = Field(default_factory=list)
    sent_at: datetime


class AttachmentOut(ResponseModel):
    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    description: str
    uploaded_by: str
    uploaded_by_name: str
    institution_id: str | None
    created_at: datetime


class AttachmentListOut(ResponseModel):
    items: list[AttachmentOut]


class AgreementOut(ResponseModel):
    id: str
    first_institution_id: str
    second_institution_id: str
    title: str
    document_ref: str
    status: str
    valid_from: datetime
    valid_until: datetime | None
    recorded_by_id: str | None
    recorded_at: datetime
    terminated_at: datetime | None
    termination_reason: str


class AgreementListOut(ResponseModel):
    items: list[AgreementOut]


class QualificationOut(ResponseModel):
    id: str
    user_id: str
    institution_id: str
    licence_number: str
    licence_valid_until: date | None
    licence_suspended: bool
    independent_practice_since: date | None
    specialties: list[str]
    title: int | None
    recorded_by_id: str | None
    recorded_at: datetime
    superseded_at: datetime | None
    supersede_reason: str


class QualificationListOut(ResponseModel):
    items: list[QualificationOut]


class DueRecordOut(ResponseModel):
    table: str
    id: str
    consultation_id: str
    retain_until: datetime


class RetentionOut(ResponseModel):
    items: list[DueRecordOut]


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


class RecordStateOut(ResponseModel):
    """What an administrator's or auditor's record-keeping act returns: no clinical content."""

    id: str
    status: str
    business_status: str
    retain_until: datetime | None = None
    legal_hold: bool = False
    legal_hold_reason: str = ""


def consultation_out(row: Consultation, history: list[StatusChangeOut] | None = None) -> ConsultationOut:
    out = ConsultationOut.model_validate(row)
    out.history = history or []
    out.overdue = row.response_due_at is not None and utcnow() >= row.response_due_at
    return out


def _detail(session: Session, row: Consultation, principal: Principal) -> ConsultationOut:
    out = consultation_out(
        row, history=[StatusChangeOut.model_validate(h) for h in service.history(session, row.id)]
    )
    snapshot = service.snapshot(session, row)
    out.actions = [a.value for a in wf.available_actions(snapshot, service.actor_for(principal))]
    out.deadline_notices = [NoticeOut.model_validate(n) for n in service.deadline_notices(session, row.id)]
    out.appointments = [AppointmentOut.model_validate(a) for a in scheduling.appointments(session, row.id)]
    return out


def _attachment_out(session: Session, row: ConsultAttachment) -> AttachmentOut:
    uploader = session.get(User, row.uploaded_by_id)
    return AttachmentOut(
        id=row.id,
        filename=row.filename,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        description=row.description,
        uploaded_by=row.uploaded_by_id,
        uploaded_by_name=uploader.display_name if uploader is not None else "",
        institution_id=row.institution_id,
        created_at=row.created_at,
    )


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
    "/consultations/{consultation_id}/actions/entered-in-error",
    summary="Mark entered in error (an administrator of either institution; mandatory reason; kept)",
)
def entered_in_error(
    kernel: KernelDep, session: DbDep, principal: Admin, consultation_id: Id, body: ReasonIn
) -> RecordStateOut:
    row = service.mark_entered_in_error(session, kernel.audit, principal, consultation_id, body.reason)
    out = RecordStateOut.model_validate(row)
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/legal-hold",
    summary="Place or lift a legal hold (an administrator of either institution)",
)
def legal_hold(
    kernel: KernelDep, session: DbDep, principal: Admin, consultation_id: Id, body: LegalHoldIn
) -> RecordStateOut:
    row = admin.set_legal_hold(
        session, kernel.audit, principal, consultation_id, hold=body.hold, reason=body.reason
    )
    out = RecordStateOut.model_validate(row)
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
        attachment_ids=body.attachment_ids,
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
    service.sign_opinion(
        session,
        kernel.audit,
        kernel.secret_box,
        principal,
        consultation_id,
        body.content(),
        **body.pin(kernel, session, principal),
    )
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
        session,
        kernel.audit,
        kernel.secret_box,
        principal,
        consultation_id,
        content,
        reason,
        **body.pin(kernel, session, principal),
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


# ---- attachments ---------------------------------------------------------------------------------


def _cipher(kernel: Any) -> attachments.AttachmentCipher:
    return attachments.AttachmentCipher(kernel.secret_key)


@api.post(
    "/consultations/{consultation_id}/attachments",
    status_code=201,
    summary="Upload a file (PDF, PNG, JPEG, DICOM, plain text; at most 20 MB)",
)
def upload_attachment(
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    file: Annotated[UploadFile, File(description="the file")],
    description: Annotated[str, Form(max_length=2000)] = "",
) -> AttachmentOut:
    data = file.file.read(attachments.MAX_ATTACHMENT_BYTES + 1)
    row = attachments.upload(
        session,
        kernel.audit,
        _cipher(kernel),
        principal,
        consultation_id,
        filename=file.filename,
        declared_type=file.content_type,
        data=data,
        description=description.strip(),
    )
    out = _attachment_out(session, row)
    session.commit()
    return out


@api.get("/consultations/{consultation_id}/attachments", summary="The consultation's files, oldest first")
def list_attachments(
    kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> AttachmentListOut:
    rows = attachments.listing(session, kernel.audit, principal, consultation_id)
    out = AttachmentListOut(items=[_attachment_out(session, r) for r in rows])
    session.commit()
    return out


@api.get(
    "/consultations/{consultation_id}/attachments/{attachment_id}",
    summary="Download a file (as an attachment, never rendered inline)",
    response_class=Response,
    responses={200: {"content": {t: {} for t in sorted(attachments.ALLOWED_TYPES)}}},
)
def download_attachment(
    kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id, attachment_id: Id
) -> Response:
    row, data = attachments.download(
        session, kernel.audit, _cipher(kernel), principal, consultation_id, attachment_id
    )
    headers = {
        "Content-Disposition": attachments.content_disposition(row.filename),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(row.sha256)).decode(),  # RFC 3230: base64
    }
    media_type = row.content_type
    session.commit()
    return Response(content=data, media_type=media_type, headers=headers)


# ---- a live session ------------------------------------------------------------------------------


@api.post(
    "/consultations/{consultation_id}/schedule",
    status_code=201,
    summary="Propose a live session (accepted or in progress); the other institution books or declines it",
)
def propose_session(
    kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id, body: ScheduleIn
) -> AppointmentOut:
    row: ConsultAppointment = scheduling.propose(
        session, kernel.audit, principal, consultation_id, start=body.start, end=body.end, note=body.note
    )
    out = AppointmentOut.model_validate(row)
    session.commit()
    return out


@api.post(
    "/consultations/{consultation_id}/schedule/{appointment_id}/respond",
    summary="Book (accept) or decline a proposed live session",
)
def respond_session(
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    appointment_id: Id,
    body: ScheduleResponseIn,
) -> AppointmentOut:
    row = scheduling.respond(
        session, kernel.audit, principal, consultation_id, appointment_id, accept=body.accept
    )
    out = AppointmentOut.model_validate(row)
    session.commit()
    return out


# ---- administration ------------------------------------------------------------------------------


@api.get("/agreements", summary="Administrator: my institution's co-operation agreements (TC-01)")
def list_agreements(kernel: KernelDep, session: DbDep, principal: Admin) -> AgreementListOut:
    rows = admin.list_agreements(session, kernel.audit, principal)
    out = AgreementListOut(items=[AgreementOut.model_validate(r) for r in rows])
    session.commit()
    return out


@api.post(
    "/agreements", status_code=201, summary="Administrator: record an agreement with another institution"
)
def create_agreement(kernel: KernelDep, session: DbDep, principal: Admin, body: AgreementIn) -> AgreementOut:
    row = admin.create_agreement(
        session,
        kernel.audit,
        principal,
        other_institution_id=body.other_institution_id,
        title=body.title,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        document_ref=body.document_ref,
    )
    out = AgreementOut.model_validate(row)
    session.commit()
    return out


@api.post("/agreements/{agreement_id}/terminate", summary="Administrator: terminate an agreement (kept)")
def terminate_agreement(
    kernel: KernelDep, session: DbDep, principal: Admin, agreement_id: Id, body: ReasonIn
) -> AgreementOut:
    row = admin.terminate_agreement(session, kernel.audit, principal, agreement_id, body.reason)
    out = AgreementOut.model_validate(row)
    session.commit()
    return out


@api.post(
    "/signing-keys/{user_id}/unlock",
    status_code=204,
    summary="Administrator: lift a consultant's wrong-PIN lockout (the PIN stays unknown)",
)
def unlock_signing_key(kernel: KernelDep, session: DbDep, principal: Admin, user_id: Id) -> Response:
    service.unlock_signing_key(session, kernel.audit, principal, user_id)
    session.commit()
    return Response(status_code=204)


@api.get("/qualifications", summary="Administrator: my institution's consultant qualifications (TC-05)")
def list_qualifications(kernel: KernelDep, session: DbDep, principal: Admin) -> QualificationListOut:
    rows = admin.list_qualifications(session, kernel.audit, principal)
    out = QualificationListOut(items=[QualificationOut.model_validate(r) for r in rows])
    session.commit()
    return out


@api.post(
    "/qualifications",
    status_code=201,
    summary="Administrator: record a physician's qualification (supersedes the current one)",
)
def create_qualification(
    kernel: KernelDep, session: DbDep, principal: Admin, body: QualificationIn
) -> QualificationOut:
    row = admin.create_qualification(
        session,
        kernel.audit,
        principal,
        user_id=body.user_id,
        specialties=body.specialties,
        title=body.title,
        independent_practice_since=body.independent_practice_since,
        licence_number=body.licence_number,
        licence_valid_until=body.licence_valid_until,
        licence_suspended=body.licence_suspended,
    )
    out = QualificationOut.model_validate(row)
    session.commit()
    return out


@api.post(
    "/qualifications/{qualification_id}/supersede",
    summary="Administrator: withdraw a qualification (kept, stamped superseded)",
)
def supersede_qualification(
    kernel: KernelDep, session: DbDep, principal: Admin, qualification_id: Id, body: ReasonIn
) -> QualificationOut:
    row = admin.supersede_qualification(session, kernel.audit, principal, qualification_id, body.reason)
    out = QualificationOut.model_validate(row)
    session.commit()
    return out


@api.post(
    "/review/consultations/{consultation_id}/legal-hold",
    summary="Auditor: place or lift a legal hold on any consultation",
)
def review_legal_hold(
    kernel: KernelDep, session: DbDep, principal: Auditor, consultation_id: Id, body: LegalHoldIn
) -> RecordStateOut:
    row = admin.set_legal_hold(
        session, kernel.audit, principal, consultation_id, hold=body.hold, reason=body.reason
    )
    out = RecordStateOut.model_validate(row)
    session.commit()
    return out


@api.get(
    "/review/retention",
    summary="Auditor: records past their retention and not on legal hold (nothing is deleted)",
)
def review_retention(kernel: KernelDep, session: DbDep, principal: Auditor) -> RetentionOut:
    due = admin.retention_review(session, kernel.audit, principal)
    out = RetentionOut(
        items=[
            DueRecordOut(
                table=d.table, id=d.id, consultation_id=d.consultation_id, retain_until=d.retain_until
            )
            for d in due
        ]
    )
    session.commit()
    return out
