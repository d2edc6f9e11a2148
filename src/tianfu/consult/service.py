"""Consultations on the database: snapshots for the state machine, persistence, access, audit, events.

Every state change goes through :func:`transition`: build the :class:`workflow.Consultation` snapshot
from the rows, ask :func:`workflow.decide`, and in the same transaction write the new status and its
history row, the audit record and one outbox event per effect (notifications, timers). A refusal
becomes a 422 problem listing every failed gate (code, requirement, English and Chinese message); the
refused attempt is audited too.

Who sees a consultation (SEC-01): its inviting physician, and the consultants of the invited
institution once it has been submitted; everybody else gets 404. Auditors read through the separate
``review_*`` functions: read-only, audited. Kernel roles map onto the workflow's staff roles:
physician → inviting physician, consultant → invited consultant. A coordinator (会诊管理员) would be a
new kernel ``Role`` with ``CLINICAL_READ``/``CLINICAL_WRITE`` mapped to ``StaffRole.COORDINATOR`` in
:func:`actor_for`; the workflow already knows what it may do.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from tianfu.consult import signing
from tianfu.consult import workflow as wf
from tianfu.consult.tables import (
    ConsultantQualification,
    Consultation,
    ConsultConsent,
    ConsultDeadlineNotice,
    ConsultMessage,
    ConsultStatusChange,
    CooperationAgreement,
    OpinionVersion,
    SignerKey,
)
from tianfu.consult.timers import get_consult_settings
from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden, Invalid, NotFound
from tianfu.core.identity.models import User
from tianfu.core.identity.service import Authenticator
from tianfu.core.identity.totp import SecretBox
from tianfu.core.patients.models import CareGrant
from tianfu.core.patients.service import grant_access, require_access
from tianfu.core.plugins import CasePacketSection, case_packet
from tianfu.core.security.permissions import Role
from tianfu.core.security.principal import Principal

RESOURCE = "Consultation"
CASE_PACKET_WINDOW = timedelta(hours=24)
# The assigned consultant sees the patient's record (images included) for the consultation's life.
CONSULTANT_ACCESS = timedelta(days=30)
TITLE_BY_NAME = {title.zh: title for title in wf.ProfessionalTitle}
LIST_LIMIT = 100


# ---- snapshots -----------------------------------------------------------------------------------


def actor_for(principal: Principal) -> wf.Actor:
    # The institution's administrator (医务科/病案 in a small institution) is the privileged role that
    # marks a consultation entered-in-error (§4); the workflow checks it is one of the two institutions.
    roles = {
        Role.PHYSICIAN: frozenset({wf.StaffRole.PHYSICIAN}),
        Role.CONSULTANT: frozenset({wf.StaffRole.CONSULTANT}),
        Role.ADMIN: frozenset({wf.StaffRole.RECORDS_OFFICER}),
    }.get(Role(principal.role), frozenset())
    return wf.Actor(principal.user_id, principal.organization_id or "", roles)


def clinician(session: Session, user_id: str) -> wf.Clinician:
    """The qualification on record, else what the staff directory knows about the physician."""
    qualification = session.scalar(
        select(ConsultantQualification)
        .where(ConsultantQualification.user_id == user_id, ConsultantQualification.superseded_at.is_(None))
        .order_by(ConsultantQualification.recorded_at.desc())
        .limit(1)
    )
    if qualification is not None:
        return wf.Clinician(
            practitioner_id=user_id,
            institution_id=qualification.institution_id,
            licence_number=qualification.licence_number,
            licence_valid_until=qualification.licence_valid_until,
            licence_suspended=qualification.licence_suspended,
            independent_practice_since=qualification.independent_practice_since,
            specialties=frozenset(qualification.specialties),
            title=wf.ProfessionalTitle(qualification.title) if qualification.title else None,
        )
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return wf.Clinician(
        practitioner_id=user.id,
        institution_id=user.organization_id or "",
        licence_number=user.licence_number,
        independent_practice_since=user.practicing_since,
        specialties=frozenset({user.specialty}) if user.specialty else frozenset(),
        title=TITLE_BY_NAME.get(user.professional_title),
    )


def agreement_between(session: Session, first: str, second: str) -> CooperationAgreement | None:
    """The agreement covering both institutions, an active one first."""
    rows = session.scalars(
        select(CooperationAgreement)
        .where(
            or_(
                and_(
                    CooperationAgreement.first_institution_id == first,
                    CooperationAgreement.second_institution_id == second,
                ),
                and_(
                    CooperationAgreement.first_institution_id == second,
                    CooperationAgreement.second_institution_id == first,
                ),
            )
        )
        .order_by(CooperationAgreement.recorded_at.desc())
    ).all()
    return next((r for r in rows if r.status == wf.AgreementStatus.ACTIVE), rows[0] if rows else None)


def _agreement(row: CooperationAgreement | None) -> wf.Agreement | None:
    if row is None:
        return None
    return wf.Agreement(
        agreement_id=row.id,
        institution_ids=frozenset({row.first_institution_id, row.second_institution_id}),
        status=wf.AgreementStatus(row.status),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
    )


def _consent(row: ConsultConsent) -> wf.ConsentRecord:
    return wf.ConsentRecord(
        kind=wf.ConsentKind(row.kind),
        patient_id=row.patient_id,
        granted_at=row.granted_at,
        signed_form_ref=row.signed_form_ref,
        signed_by=wf.ConsentSigner(row.signed_by),
        recipient_institution_id=row.recipient_institution_id,
        withdrawn_at=row.withdrawn_at,
    )


def consents(session: Session, consultation_id: str) -> Sequence[ConsultConsent]:
    return session.scalars(
        select(ConsultConsent)
        .where(ConsultConsent.consultation_id == consultation_id)
        .order_by(ConsultConsent.recorded_at)
    ).all()


def opinion_versions(session: Session, consultation_id: str) -> Sequence[OpinionVersion]:
    return session.scalars(
        select(OpinionVersion)
        .where(OpinionVersion.consultation_id == consultation_id)
        .order_by(OpinionVersion.version)
    ).all()


@dataclass(frozen=True)
class VerifiedOpinion:
    rows: Sequence[OpinionVersion]
    chain: signing.ChainVerification

    @property
    def latest(self) -> OpinionVersion:
        return self.rows[-1]


def _trusted_keys(session: Session, signer_ids: set[str]) -> dict[str, frozenset[str]]:
    """Each signer's registered, unrevoked key fingerprints (superseded ones included, for what they
    signed): never the one a stored record names."""
    keys = session.scalars(
        select(SignerKey).where(SignerKey.user_id.in_(signer_ids), SignerKey.revoked_at.is_(None))
    ).all()
    trusted: dict[str, frozenset[str]] = {}
    for key in keys:
        trusted[key.user_id] = trusted.get(key.user_id, frozenset()) | {key.fingerprint}
    return trusted


def verified_opinion(session: Session, consultation_id: str) -> VerifiedOpinion | None:
    """All versions, verified as a chain against the signers' registered keys (on every read, SEC-07)."""
    rows = opinion_versions(session, consultation_id)
    if not rows:
        return None
    versions = [row.as_signed_version() for row in rows]
    trusted = _trusted_keys(session, {row.signer_id for row in rows})
    return VerifiedOpinion(rows, signing.verify_chain(versions, trusted=trusted))


def snapshot(session: Session, row: Consultation) -> wf.Consultation:
    """The workflow's view of the rows."""
    frame = (
        wf.TimeFrame(row.time_frame_earliest, row.time_frame_latest)
        if row.time_frame_earliest is not None and row.time_frame_latest is not None
        else None
    )
    opinion = None
    verified = verified_opinion(session, row.id)
    if verified is not None:
        latest = verified.latest
        opinion = wf.OpinionRecord(
            document_id=latest.document_id,
            version=latest.version,
            content_hash=latest.content_hash,
            status=wf.ReportStatus.FINAL,
            origin=wf.OpinionOrigin(latest.origin),
            signer_id=latest.signer_id,
            signature_verified=verified.chain.valid,
        )
    decision = (
        wf.Decision(row.decided_by_id, row.decided_at, row.decision_text or "")
        if row.decided_by_id is not None and row.decided_at is not None
        else None
    )
    return wf.Consultation(
        consultation_id=row.id,
        patient_id=row.patient_id,
        inviting_institution_id=row.inviting_institution_id,
        invited_institution_id=row.invited_institution_id,
        requester=clinician(session, row.requester_id),
        created_at=row.created_at,
        invitation=wf.Invitation(
            reason=row.reason,
            purpose=row.purpose,
            case_summary=row.case_summary,
            specialty=row.specialty,
            title=wf.ProfessionalTitle(row.title) if row.title else None,
            time_frame=frame,
            priority=wf.Priority(row.priority),
        ),
        status=wf.TaskStatus(row.status),
        mode=wf.ConsultMode(row.mode),
        agreement=_agreement(
            agreement_between(session, row.inviting_institution_id, row.invited_institution_id)
        ),
        consents=tuple(_consent(c) for c in consents(session, row.id)),
        platform_id=row.platform_id,
        assigned_consultant=clinician(session, row.assigned_consultant_id)
        if row.assigned_consultant_id
        else None,
        live_session=wf.LiveSession(
            row.scheduled_at,
            clinician(session, row.accompanying_physician_id) if row.accompanying_physician_id else None,
        ),
        opinion=opinion,
        decision=decision,
        status_reason=row.status_reason,
        submitted_at=row.submitted_at,
        received_at=row.received_at,
        responded_at=row.responded_at,
    )


# ---- access --------------------------------------------------------------------------------------


def is_participant(principal: Principal, row: Consultation) -> bool:
    """The inviting physician; the invited institution's consultants once the request left draft."""
    if principal.role == Role.PHYSICIAN and principal.user_id == row.requester_id:
        return True
    return (
        principal.role == Role.CONSULTANT
        and principal.organization_id == row.invited_institution_id
        and row.status != wf.TaskStatus.DRAFT
    )


def _audit(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    row: Consultation,
    action: str,
    action_type: str,
    detail: dict[str, Any] | None = None,
    outcome: int = 0,
    outcome_desc: str = "",
) -> None:
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type=action_type,
        outcome=outcome,
        outcome_desc=outcome_desc,
        resource_type=RESOURCE,
        resource_id=row.id,
        patient_ids=[row.patient_id],
        purpose=principal.purpose,
        detail=detail,
    )


audit_consultation = _audit


def load(session: Session, principal: Principal, consultation_id: str) -> Consultation:
    """The consultation, if the caller takes part in it; 404 otherwise (its existence is not told)."""
    row = session.get(Consultation, consultation_id)
    if row is None or not is_participant(principal, row):
        raise NotFound(f"no consultation {consultation_id}")
    return row


def get(session: Session, audit: AuditLog, principal: Principal, consultation_id: str) -> Consultation:
    row = load(session, principal, consultation_id)
    _audit(session, audit, principal, row, "consult.read", "R")
    return row


def history(session: Session, consultation_id: str) -> Sequence[ConsultStatusChange]:
    return session.scalars(
        select(ConsultStatusChange)
        .where(ConsultStatusChange.consultation_id == consultation_id)
        .order_by(ConsultStatusChange.at, ConsultStatusChange.id)
    ).all()


def my_requests(session: Session, audit: AuditLog, principal: Principal) -> Sequence[Consultation]:
    rows = session.scalars(
        select(Consultation)
        .where(Consultation.requester_id == principal.user_id)
        .order_by(Consultation.created_at.desc())
        .limit(LIST_LIMIT)
    ).all()
    _audit_list(session, audit, principal, "consult.list.mine", rows)
    return rows


def incoming(session: Session, audit: AuditLog, principal: Principal) -> Sequence[Consultation]:
    """The invited institution's queue: open requests first by response deadline, then the rest."""
    if principal.role != Role.CONSULTANT or principal.organization_id is None:
        return []
    rows = session.scalars(
        select(Consultation)
        .where(
            Consultation.invited_institution_id == principal.organization_id,
            Consultation.status != wf.TaskStatus.DRAFT,
        )
        .order_by(
            Consultation.response_due_at.is_(None), Consultation.response_due_at, Consultation.created_at
        )
        .limit(LIST_LIMIT)
    ).all()
    _audit_list(session, audit, principal, "consult.list.incoming", rows)
    return rows


def _audit_list(
    session: Session, audit: AuditLog, principal: Principal, action: str, rows: Sequence[Consultation]
) -> None:
    # One record per list, naming every patient shown (the compromise of §6 "audit volume").
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="R",
        resource_type=RESOURCE,
        patient_ids=[r.patient_id for r in rows],
        purpose=principal.purpose,
        detail={"count": len(rows)},
    )


# ---- drafts --------------------------------------------------------------------------------------


@dataclass
class DraftFields:
    reason: str | None = None
    purpose: str | None = None
    case_summary: str | None = None
    specialty: str | None = None
    title: int | None = None
    time_frame_earliest: datetime | None = None
    time_frame_latest: datetime | None = None
    priority: str | None = None
    mode: str | None = None
    scheduled_at: datetime | None = None
    accompanying_physician_id: str | None = None


def _apply_fields(session: Session, row: Consultation, fields: DraftFields) -> list[str]:
    changed = []
    for name, value in vars(fields).items():
        if value is None:
            continue
        if name == "accompanying_physician_id":
            companion = session.get(User, value)
            if companion is None or companion.organization_id != row.inviting_institution_id:
                raise Invalid("the accompanying physician must work at the inviting institution")
        setattr(row, name, value)
        changed.append(name)
    return changed


def create_draft(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    patient_id: str,
    invited_institution_id: str,
    fields: DraftFields,
) -> Consultation:
    if principal.role != Role.PHYSICIAN or principal.organization_id is None:
        raise Forbidden("only a physician of the inviting institution can request a consultation")
    require_access(session, audit, principal, patient_id, action="consult.create")
    from tianfu.core.patients.models import Organization

    if session.get(Organization, invited_institution_id) is None:
        raise NotFound(f"no institution {invited_institution_id}")
    if invited_institution_id == principal.organization_id:
        raise Invalid("invite another institution: a consultation is between two institutions (TC-01)")
    row = Consultation(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        inviting_institution_id=principal.organization_id,
        requester_id=principal.user_id,
        invited_institution_id=invited_institution_id,
        created_at=utcnow(),
    )
    session.add(row)
    _apply_fields(session, row, fields)
    session.flush()
    _audit(session, audit, principal, row, "consult.create", "C")
    return row


def update_draft(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str, fields: DraftFields
) -> Consultation:
    row = load(session, principal, consultation_id)
    if principal.user_id != row.requester_id:
        raise Forbidden("only the inviting physician edits the request")
    if row.status not in (wf.TaskStatus.DRAFT, wf.TaskStatus.ACCEPTED) or (
        row.status == wf.TaskStatus.ACCEPTED
        and any(v is not None for k, v in vars(fields).items() if k not in _SCHEDULING_FIELDS)
    ):
        raise Invalid("the invitation can only be edited in draft; once accepted, only the scheduling")
    changed = _apply_fields(session, row, fields)
    _audit(session, audit, principal, row, "consult.update", "U", {"fields": changed})
    return row


_SCHEDULING_FIELDS = frozenset({"mode", "scheduled_at", "accompanying_physician_id"})


# ---- transitions ---------------------------------------------------------------------------------


def _refused(
    session: Session, audit: AuditLog, principal: Principal, row: Consultation, outcome: wf.Outcome
) -> Invalid:
    """Audit the refused attempt (committed on its own), and the 422 problem to raise."""
    action = outcome.action.value
    consultation_id, patient_id = row.id, row.patient_id
    session.rollback()
    audit.record(
        session,
        actor=principal.actor,
        action=f"consult.{action}",
        action_type="U",
        outcome=OUTCOME_MINOR_FAILURE,
        outcome_desc="refused: " + ", ".join(outcome.codes),
        resource_type=RESOURCE,
        resource_id=consultation_id,
        patient_ids=[patient_id],
        purpose=principal.purpose,
    )
    session.commit()
    return Invalid(
        "; ".join(r.message_en for r in outcome.refusals),
        errors=[
            {
                "code": r.code,
                "requirement": r.requirement,
                "message": r.message_en,
                "message_zh": r.message_zh,
            }
            for r in outcome.refusals
        ],
    )


def _persist(session: Session, row: Consultation, after: wf.Consultation) -> None:
    row.status = after.status.value
    row.business_status = wf.business_status(after)
    row.status_reason = after.status_reason
    row.submitted_at, row.received_at, row.responded_at = (
        after.submitted_at,
        after.received_at,
        after.responded_at,
    )
    row.assigned_consultant_id = (
        after.assigned_consultant.practitioner_id if after.assigned_consultant else None
    )
    if after.decision is not None:
        row.decision_text = after.decision.text
        row.decided_by_id = after.decision.decided_by
        row.decided_at = after.decision.decided_at
    schedule = wf.response_schedule(after)
    row.response_stage = schedule.stage.value if schedule else None
    row.response_remind_at = schedule.remind_at if schedule else None
    row.response_due_at = schedule.deadline if schedule else None
    row.response_escalate_at = schedule.escalate_at if schedule else None
    change = after.history[-1]
    session.add(
        ConsultStatusChange(
            consultation_id=row.id,
            action=change.action.value,
            source=change.source.value,
            target=change.target.value,
            actor_id=change.actor_id,
            reason=change.reason,
            at=change.at,
        )
    )


def _enqueue_effects(session: Session, row: Consultation, outcome: wf.Outcome) -> None:
    """One outbox event per effect; notification and timer consumers act on them (not built yet)."""
    base = {
        "consultation_id": row.id,
        "action": outcome.action.value,
        "status": row.status,
        "business_status": row.business_status,
        "inviting_institution_id": row.inviting_institution_id,
        "invited_institution_id": row.invited_institution_id,
        "requester_id": row.requester_id,
        "assigned_consultant_id": row.assigned_consultant_id,
    }
    for effect in outcome.effects:
        data = dict(base)
        if effect is wf.Effect.SCHEDULE_RESPONSE_TIMERS and row.response_due_at is not None:
            data |= {
                "stage": row.response_stage,
                "remind_at": row.response_remind_at.isoformat() if row.response_remind_at else None,
                "due_at": row.response_due_at.isoformat(),
                "escalate_at": row.response_escalate_at.isoformat() if row.response_escalate_at else None,
            }
        enqueue(session, f"tianfu.consult.{effect.value}", data)


def transition(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    action: wf.Action,
    *,
    reason: str | None = None,
    consultant_id: str | None = None,
    decision: str | None = None,
) -> Consultation:
    """Fire ``action``: the one path of every status change."""
    row = load(session, principal, consultation_id)
    return fire(
        session, audit, principal, row, action, reason=reason, consultant_id=consultant_id, decision=decision
    )


def fire(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    row: Consultation,
    action: wf.Action,
    *,
    reason: str | None = None,
    consultant_id: str | None = None,
    decision: str | None = None,
) -> Consultation:
    """Fire ``action`` on a consultation the caller was already found entitled to see."""
    before = snapshot(session, row)
    consultant = None
    if action is wf.Action.ACCEPT:
        chosen = consultant_id or principal.user_id
        user = session.get(User, chosen)
        if user is None or user.role != Role.CONSULTANT:
            raise Invalid(f"no consultant {chosen}")
        consultant = clinician(session, chosen)
    command = wf.Command(
        action, actor_for(principal), utcnow(), reason=reason, consultant=consultant, decision=decision
    )
    outcome = wf.decide(before, command)
    if not outcome.allowed:
        raise _refused(session, audit, principal, row, outcome)
    _persist(session, row, outcome.consultation)
    _audit(
        session,
        audit,
        principal,
        row,
        f"consult.{action.value}",
        "U",
        {"from": outcome.source.value, "to": row.status, "reason": reason},
    )
    if action is wf.Action.ACCEPT and row.assigned_consultant_id is not None:
        _share_patient(session, audit, principal, row)
    if row.status in ACCESS_ENDS:
        end_patient_access(session, audit, principal, row)
    _enqueue_effects(session, row, outcome)
    return row


def mark_entered_in_error(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str, reason: str
) -> Consultation:
    """The privileged role (an administrator of either institution) marks the consultation entered in
    error, with a reason; the record and its history are kept, never deleted (§4)."""
    row = session.get(Consultation, consultation_id)
    if (
        row is None
        or principal.role != Role.ADMIN
        or principal.organization_id not in (row.inviting_institution_id, row.invited_institution_id)
    ):
        raise NotFound(f"no consultation {consultation_id}")
    return fire(session, audit, principal, row, wf.Action.MARK_ENTERED_IN_ERROR, reason=reason)


# The consultant's view of the patient's chart ends with the consultation; the consultation record
# itself (and its signed opinion) stays readable to both sides, who both keep it (TC-09).
ACCESS_ENDS = frozenset(
    {
        wf.TaskStatus.COMPLETED,
        wf.TaskStatus.FAILED,
        wf.TaskStatus.CANCELLED,
        wf.TaskStatus.REJECTED,
        wf.TaskStatus.ENTERED_IN_ERROR,
    }
)


def _grant_reason(row: Consultation) -> str:
    return f"consultation {row.id}"


def end_patient_access(session: Session, audit: AuditLog, principal: Principal, row: Consultation) -> int:
    """Revoke this consultation's care grant(s) to the patient; returns how many were revoked."""
    now = utcnow()
    grants = session.scalars(
        select(CareGrant).where(
            CareGrant.patient_id == row.patient_id,
            CareGrant.kind == "consultation",
            CareGrant.reason == _grant_reason(row),
            CareGrant.revoked_at.is_(None),
        )
    ).all()
    for grant in grants:
        grant.revoked_at = now
        audit.record(
            session,
            actor=principal.actor,
            action="patient.grant.revoke",
            action_type="U",
            resource_type="CareGrant",
            resource_id=grant.id,
            patient_ids=[row.patient_id],
            purpose=principal.purpose,
            detail={"user": grant.user_id, "consultation": row.id, "status": row.status},
        )
    return len(grants)


def _share_patient(session: Session, audit: AuditLog, principal: Principal, row: Consultation) -> None:
    """The assigned consultant sees the patient's record through the kernel (images included)."""
    now = utcnow()
    existing = session.scalar(
        select(CareGrant.id).where(
            CareGrant.user_id == row.assigned_consultant_id,
            CareGrant.patient_id == row.patient_id,
            CareGrant.kind == "consultation",
            CareGrant.reason == _grant_reason(row),
            CareGrant.revoked_at.is_(None),
            or_(CareGrant.expires_at.is_(None), CareGrant.expires_at > now),
        )
    )
    if existing is None and row.assigned_consultant_id is not None:
        grant_access(
            session,
            audit,
            granted_by=principal,
            user_id=row.assigned_consultant_id,
            patient_id=row.patient_id,
            kind="consultation",
            reason=_grant_reason(row),
            expires_at=now + CONSULTANT_ACCESS,
        )


# ---- consents ------------------------------------------------------------------------------------


def record_consent(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    *,
    kind: str,
    signed_form_ref: str,
    signed_by: str = "patient",
    signer_name: str = "",
    granted_at: datetime | None = None,
) -> ConsultConsent:
    row = load(session, principal, consultation_id)
    if principal.user_id != row.requester_id:
        raise Forbidden("the inviting side records the patient's consents (TC-02)")
    now = utcnow()
    if granted_at is not None and granted_at > now:
        raise Invalid("a consent cannot be granted in the future")
    consent = ConsultConsent(
        consultation_id=row.id,
        patient_id=row.patient_id,
        kind=wf.ConsentKind(kind).value,
        signed_by=wf.ConsentSigner(signed_by).value,
        signer_name=signer_name,
        signed_form_ref=signed_form_ref,
        recipient_institution_id=row.invited_institution_id if kind == wf.ConsentKind.DATA_SHARING else None,
        granted_at=granted_at or now,
        recorded_by_id=principal.user_id,
        recorded_at=now,
    )
    session.add(consent)
    session.flush()
    _audit(
        session, audit, principal, row, "consult.consent.record", "C", {"kind": kind, "consent": consent.id}
    )
    return consent


def withdraw_consent(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    consent_id: str,
    reason: str,
) -> ConsultConsent:
    row = load(session, principal, consultation_id)
    if principal.user_id != row.requester_id:
        raise Forbidden("the inviting side records a withdrawal (PIPL art. 15)")
    consent = session.get(ConsultConsent, consent_id)
    if consent is None or consent.consultation_id != row.id:
        raise NotFound(f"no consent {consent_id}")
    if consent.withdrawn_at is not None:
        raise Invalid("the consent is already withdrawn")
    consent.withdrawn_at = utcnow()
    consent.withdrawn_by_id = principal.user_id
    consent.withdrawal_reason = reason
    _audit(session, audit, principal, row, "consult.consent.withdraw", "U", {"consent": consent.id})
    enqueue(session, "tianfu.consult.consent-withdrawn", {"consultation_id": row.id, "kind": consent.kind})
    return consent


def list_consents(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str
) -> Sequence[ConsultConsent]:
    row = load(session, principal, consultation_id)
    _audit(session, audit, principal, row, "consult.consent.read", "R")
    return consents(session, row.id)


# ---- messages ------------------------------------------------------------------------------------

CLOSED_FOR_MESSAGES = frozenset({wf.TaskStatus.DRAFT, wf.TaskStatus.ENTERED_IN_ERROR})


def post_message(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    *,
    body: str,
    in_response_to_id: str | None = None,
    attachment_ids: Sequence[str] = (),
) -> ConsultMessage:
    from tianfu.consult.attachments import check_ids

    row = load(session, principal, consultation_id)
    if row.status in CLOSED_FOR_MESSAGES:
        raise Invalid(f"no discussion on a consultation that is {row.status}")
    attached = check_ids(session, row.id, attachment_ids)
    if in_response_to_id is not None:
        parent = session.get(ConsultMessage, in_response_to_id)
        if parent is None or parent.consultation_id != row.id:
            raise NotFound(f"no message {in_response_to_id} in this consultation")
    message = ConsultMessage(
        consultation_id=row.id,
        author_id=principal.user_id,
        author_institution_id=principal.organization_id,
        in_response_to_id=in_response_to_id,
        body=body,
        attachment_ids=attached,
        sent_at=utcnow(),
    )
    session.add(message)
    session.flush()
    _audit(
        session,
        audit,
        principal,
        row,
        "consult.message.post",
        "C",
        {"message": message.id, "attachments": attached},
    )
    enqueue(
        session,
        "tianfu.consult.message-posted",
        {
            "consultation_id": row.id,
            "message_id": message.id,
            "author_id": principal.user_id,
            "attachment_ids": attached,
        },
    )
    return message


def messages(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str
) -> Sequence[ConsultMessage]:
    row = load(session, principal, consultation_id)
    _audit(session, audit, principal, row, "consult.message.read", "R")
    return session.scalars(
        select(ConsultMessage)
        .where(ConsultMessage.consultation_id == row.id)
        .order_by(ConsultMessage.sent_at, ConsultMessage.id)
    ).all()


# ---- the opinion ---------------------------------------------------------------------------------


PIN_MIN_LENGTH = 6
PIN_MAX_ATTEMPTS = 5  # wrong PINs in a row before the key locks


def _active_key(session: Session, user_id: str, *, lock: bool = False) -> SignerKey | None:
    query = (
        select(SignerKey)
        .where(
            SignerKey.user_id == user_id,
            SignerKey.revoked_at.is_(None),
            SignerKey.superseded_at.is_(None),
            SignerKey.pin_sealed_key.is_not(None),
        )
        .order_by(SignerKey.created_at.desc())
        .limit(1)
    )
    # Locked while a PIN is checked, so that parallel guesses wait and each sees the count and lock the
    # one before it left (on SQLite every transaction already holds the write lock).
    return session.scalar(query.with_for_update() if lock else query)


def has_signing_key(session: Session, user_id: str) -> bool:
    """Whether the consultant has a PIN-protected key to sign with (else the next signature enrols one)."""
    return _active_key(session, user_id) is not None


def _check_new_pin(pin: str, confirmation: str | None) -> None:
    if len(pin) < PIN_MIN_LENGTH:
        raise Invalid(f"the signing PIN needs at least {PIN_MIN_LENGTH} characters", code="pin_too_short")
    if confirmation is None:
        raise Invalid(
            "set your signing PIN first: send it again as signing_pin_confirmation", code="pin_not_set"
        )
    if confirmation != pin:
        raise Invalid("the signing PIN and its confirmation differ", code="pin_mismatch")


def enrol_signing_key(
    session: Session,
    audit: AuditLog,
    box: SecretBox,
    principal: Principal,
    pin: str,
    confirmation: str | None,
) -> signing.SoftwareSigner:
    """A new key sealed under the consultant's new signing PIN; earlier keys stop signing, keep verifying."""
    _check_new_pin(pin, confirmation)
    algorithm = signing.algorithm_named(get_consult_settings().signature_algorithm)
    signer = algorithm.generate_signer()
    assert isinstance(signer, signing.SoftwareSigner)
    now = utcnow()
    for old in session.scalars(
        select(SignerKey).where(SignerKey.user_id == principal.user_id, SignerKey.superseded_at.is_(None))
    ):
        old.superseded_at = now
    fingerprint = signing.key_fingerprint(signer.public_key)
    session.add(
        SignerKey(
            user_id=principal.user_id,
            algorithm=signer.algorithm,
            public_key=base64.b64encode(signer.public_key).decode(),
            fingerprint=fingerprint,
            pin_sealed_key=box.seal(json.dumps(signing.seal_private_key(signer, pin))),
            created_at=now,
        )
    )
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="consult.signing-key.enrol",
        action_type="C",
        resource_type="SignerKey",
        resource_id=fingerprint,
        detail={"algorithm": signer.algorithm, "fingerprint": fingerprint},
    )
    return signer


def signer_for(
    session: Session,
    audit: AuditLog,
    box: SecretBox,
    principal: Principal,
    pin: str,
    confirmation: str | None = None,
    *,
    new_key: bool = False,
    password_confirmed: bool = False,
) -> signing.Signer:
    """The consultant's key, opened with their signing PIN (电子签名法 art. 13: sole control).

    No usable key yet (first signature, a pre-PIN key, or ``new_key`` to replace a locked or forgotten
    one): a new key is enrolled under ``pin``, which then needs ``confirmation``. A wrong PIN is refused
    (403), audited and counted, committed even though the request fails; after
    :data:`PIN_MAX_ATTEMPTS` in a row the key locks.
    """
    key = _active_key(session, principal.user_id, lock=True)
    if new_key and key is not None:
        # Replacing a working key (forgotten PIN, lockout) needs the login password, so that a hijacked
        # session cannot swap in a key of its own and sign.
        if not password_confirmed:
            raise Forbidden(
                "confirm your login password to enrol a new signing key", code="password_required"
            )
        key = None
    if key is None:
        return enrol_signing_key(session, audit, box, principal, pin, confirmation)
    if confirmation is not None and confirmation != pin:
        raise Invalid("the signing PIN and its confirmation differ", code="pin_mismatch")
    if key.locked_at is not None:
        raise Forbidden(
            "your signing key is locked after too many wrong PINs: ask an administrator to unlock it, "
            "or enrol a new key with a new PIN",
            code="signing_key_locked",
        )
    assert key.pin_sealed_key is not None
    try:
        signer = signing.open_private_key(json.loads(box.open(key.pin_sealed_key)), pin)
    except signing.WrongPin:
        # Counted in the database, not on the copy read above.
        session.execute(
            update(SignerKey)
            .where(SignerKey.id == key.id)
            .values(failed_pin_attempts=SignerKey.failed_pin_attempts + 1)
        )
        session.refresh(key)
        left = PIN_MAX_ATTEMPTS - key.failed_pin_attempts
        if left <= 0 and key.locked_at is None:
            key.locked_at = utcnow()
        audit.record(
            session,
            actor=principal.actor,
            action="consult.signing-key.wrong-pin",
            action_type="E",
            resource_type="SignerKey",
            resource_id=key.fingerprint,
            outcome=OUTCOME_MINOR_FAILURE,
            detail={"attempts": key.failed_pin_attempts, "locked": key.locked_at is not None},
        )
        session.commit()  # the count and the audit record outlive the refused request
        raise Forbidden(
            "wrong signing PIN" + (f" ({left} tries left)" if left > 0 else "; the key is now locked"),
            code="wrong_signing_pin",
            tries_left=max(left, 0),
        ) from None
    key.failed_pin_attempts = 0
    return signer


def confirm_login_password(
    session: Session, auth: Authenticator, principal: Principal, password: str
) -> bool:
    """The signed-in consultant's login password, checked (a wrong one is audited and counts toward the
    account lockout, committed even though the request then fails)."""
    user = session.get(User, principal.user_id)
    if user is None or not password:
        return False
    if auth.reauthenticate(session, user, password, client_ip=principal.client_ip):
        return True
    session.commit()
    return False


def unlock_signing_key(session: Session, audit: AuditLog, principal: Principal, user_id: str) -> None:
    """An administrator lifts a wrong-PIN lockout (the PIN itself is never known to them)."""
    user = session.get(User, user_id)
    if principal.role != Role.ADMIN or user is None or user.organization_id != principal.organization_id:
        raise Forbidden("only an administrator of the consultant's institution unlocks a signing key")
    key = _active_key(session, user_id, lock=True)
    if key is None or key.locked_at is None:
        raise Invalid("no locked signing key for this user")
    key.locked_at, key.failed_pin_attempts = None, 0
    audit.record(
        session,
        actor=principal.actor,
        action="consult.signing-key.unlock",
        action_type="U",
        resource_type="SignerKey",
        resource_id=key.fingerprint,
    )


def _report(row: Consultation, signer_id: str, content: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "consultation-opinion",
        "consultation_id": row.id,
        "patient_id": row.patient_id,
        "inviting_institution_id": row.inviting_institution_id,
        "invited_institution_id": row.invited_institution_id,
        "consultant_id": signer_id,
        "origin": wf.OpinionOrigin.CLINICIAN.value,  # an AI suggestion is never signed (TC-08)
        **content,
    }


def _store_version(session: Session, row: Consultation, version: signing.SignedVersion) -> OpinionVersion:
    stored = version.to_dict()
    record = stored["signature"]
    opinion = OpinionVersion(
        consultation_id=row.id,
        document_id=version.document_id,
        version=version.version,
        canonical_content=stored["canonical_content"],
        previous_hash=version.previous_hash,
        amendment_reason=version.amendment_reason,
        origin=wf.OpinionOrigin.CLINICIAN.value,
        algorithm=record["algorithm"],
        hash_algorithm=record["hash_algorithm"],
        signer_id=record["signer_id"],
        signed_at=version.signature.signed_at,
        content_hash=record["content_hash"],
        public_key=record["public_key"],
        public_key_fingerprint=record["public_key_fingerprint"],
        signature=record["signature"],
        recorded_at=utcnow(),
    )
    session.add(opinion)
    session.flush()
    return opinion


def sign_opinion(
    session: Session,
    audit: AuditLog,
    box: SecretBox,
    principal: Principal,
    consultation_id: str,
    content: dict[str, str],
    *,
    pin: str,
    pin_confirmation: str | None = None,
    new_key: bool = False,
    password_confirmed: bool = False,
) -> Consultation:
    """The assigned consultant signs version 1 and the consultation completes, in one transaction."""
    row = load(session, principal, consultation_id)
    if row.assigned_consultant_id != principal.user_id:
        raise Forbidden("only the assigned consultant signs the opinion (TC-07)")
    if row.status != wf.TaskStatus.IN_PROGRESS:
        raise Invalid(f"an opinion is signed while the consultation is in progress, not {row.status}")
    if opinion_versions(session, row.id):
        raise Invalid("the opinion is already signed; amend it instead")
    signer = signer_for(
        session,
        audit,
        box,
        principal,
        pin,
        pin_confirmation,
        new_key=new_key,
        password_confirmed=password_confirmed,
    )
    version = signing.sign(
        _report(row, principal.user_id, content),
        document_id=f"opinion-{row.id}",
        signer=signer,
        signer_id=principal.user_id,
        signed_at=utcnow(),
    )
    stored = _store_version(session, row, version)
    _audit(
        session,
        audit,
        principal,
        row,
        "consult.opinion.sign",
        "C",
        {"version": 1, "hash": stored.content_hash},
    )
    return transition(session, audit, principal, row.id, wf.Action.COMPLETE)


def amend_opinion(
    session: Session,
    audit: AuditLog,
    box: SecretBox,
    principal: Principal,
    consultation_id: str,
    content: dict[str, str],
    reason: str,
    *,
    pin: str,
    pin_confirmation: str | None = None,
    new_key: bool = False,
    password_confirmed: bool = False,
) -> OpinionVersion:
    """Version n+1, chained to version n; version n is never touched."""
    row = load(session, principal, consultation_id)
    if row.assigned_consultant_id != principal.user_id:
        raise Forbidden("only the assigned consultant amends the opinion")
    verified = verified_opinion(session, row.id)
    if verified is None or row.status != wf.TaskStatus.COMPLETED:
        raise Invalid("there is no completed, signed opinion to amend")
    if not verified.chain.valid:
        raise Invalid(
            "the stored opinion does not verify; it cannot be amended: " + ", ".join(verified.chain.problems)
        )
    if not reason.strip():
        raise Invalid("an amendment needs a reason")
    previous = verified.latest.as_signed_version()
    signer = signer_for(
        session,
        audit,
        box,
        principal,
        pin,
        pin_confirmation,
        new_key=new_key,
        password_confirmed=password_confirmed,
    )
    version = signing.amend(
        previous,
        _report(row, principal.user_id, content),
        reason=reason,
        signer=signer,
        signer_id=principal.user_id,
        signed_at=max(utcnow(), previous.signature.signed_at),
    )
    stored = _store_version(session, row, version)
    _audit(
        session,
        audit,
        principal,
        row,
        "consult.opinion.amend",
        "C",
        {"version": stored.version, "hash": stored.content_hash, "reason": reason},
    )
    enqueue(session, "tianfu.consult.opinion-amended", {"consultation_id": row.id, "version": stored.version})
    return stored


def read_opinion(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str
) -> VerifiedOpinion | None:
    row = load(session, principal, consultation_id)
    verified = verified_opinion(session, row.id)
    detail = (
        None
        if verified is None
        else {"valid": verified.chain.valid, "problems": list(verified.chain.problems)}
    )
    _audit(session, audit, principal, row, "consult.opinion.read", "R", detail)
    return verified


# ---- the case packet -----------------------------------------------------------------------------


def read_case_packet(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str
) -> list[CasePacketSection]:
    """What every installed module knows about the patient; the invited side only under active consent."""
    row = load(session, principal, consultation_id)
    if principal.user_id != row.requester_id:
        if row.status in ACCESS_ENDS:
            raise Forbidden("the consultation has ended: the invited side no longer reads the patient's data")
        if not _sharing_consented(session, row):
            raise Forbidden("the patient has not consented (or withdrew consent) to sharing data with you")
    sections = case_packet(session, row.patient_id, utcnow() - CASE_PACKET_WINDOW)
    _audit(
        session,
        audit,
        principal,
        row,
        "consult.case-packet.read",
        "R",
        {"modules": [s.module for s in sections]},
    )
    return sections


def _sharing_consented(session: Session, row: Consultation) -> bool:
    """PIPL art. 29: a signed, unwithdrawn consent to share with the invited institution, now."""
    now = utcnow()
    return any(
        consent.kind is wf.ConsentKind.DATA_SHARING
        and consent.recipient_institution_id == row.invited_institution_id
        and consent.signed_form_ref.strip()
        and consent.granted_at <= now
        and not consent.withdrawn_by(now)
        # The consents alone: the whole snapshot would also verify the signed opinion and look up both
        # clinicians' qualifications and the agreement, on every read of the packet.
        for consent in (_consent(c) for c in consents(session, row.id))
    )


# ---- auditors ------------------------------------------------------------------------------------


def review_list(session: Session, audit: AuditLog, principal: Principal) -> Sequence[Consultation]:
    """Every consultation, newest first, for the auditor (read-only, audited)."""
    rows = session.scalars(
        select(Consultation).order_by(Consultation.created_at.desc()).limit(LIST_LIMIT)
    ).all()
    _audit_list(session, audit, principal, "consult.review.list", rows)
    return rows


def review_get(session: Session, audit: AuditLog, principal: Principal, consultation_id: str) -> Consultation:
    row = session.get(Consultation, consultation_id)
    if row is None:
        raise NotFound(f"no consultation {consultation_id}")
    _audit(session, audit, principal, row, "consult.review.read", "R")
    return row


# ---- set-up (demo, administration) ---------------------------------------------------------------


def record_agreement(
    session: Session,
    *,
    first: str,
    second: str,
    title: str,
    valid_from: datetime,
    by: str | None = None,
    valid_until: datetime | None = None,
    document_ref: str = "",
) -> CooperationAgreement:
    row = CooperationAgreement(
        first_institution_id=first,
        second_institution_id=second,
        title=title,
        document_ref=document_ref,
        status=wf.AgreementStatus.ACTIVE.value,
        valid_from=valid_from,
        valid_until=valid_until,
        recorded_by_id=by,
    )
    session.add(row)
    return row


def record_qualification(
    session: Session,
    *,
    user: User,
    specialties: list[str],
    title: wf.ProfessionalTitle,
    independent_practice_since: date,
    licence_valid_until: date | None = None,
    licence_number: str | None = None,
    licence_suspended: bool = False,
    by: str | None = None,
) -> ConsultantQualification:
    now = utcnow()
    for old in session.scalars(
        select(ConsultantQualification).where(
            ConsultantQualification.user_id == user.id, ConsultantQualification.superseded_at.is_(None)
        )
    ):
        old.superseded_at = now
    row = ConsultantQualification(
        user_id=user.id,
        institution_id=user.organization_id or "",
        licence_number=user.licence_number if licence_number is None else licence_number,
        licence_valid_until=licence_valid_until,
        licence_suspended=licence_suspended,
        independent_practice_since=independent_practice_since,
        specialties=specialties,
        title=int(title),
        recorded_by_id=by,
        recorded_at=now,
    )
    session.add(row)
    return row


def deadline_notices(session: Session, consultation_id: str) -> Sequence[ConsultDeadlineNotice]:
    return session.scalars(
        select(ConsultDeadlineNotice)
        .where(ConsultDeadlineNotice.consultation_id == consultation_id)
        .order_by(ConsultDeadlineNotice.sent_at, ConsultDeadlineNotice.id)
    ).all()
