"""Administration of consultations: co-operation agreements (TC-01), consultant qualifications (TC-05),
legal hold (SEC-08) and the retention review.

An institution's administrator manages only its own side: agreements its institution is a party to,
qualifications of its own staff, holds on consultations its institution takes part in. An auditor may
place or lift a hold on any consultation (a dispute or an inspection is often theirs to notice). Every
write and every list is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tianfu.consult import retention, service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import ConsultantQualification, Consultation, CooperationAgreement
from tianfu.core.audit.service import AuditLog
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden, Invalid, NotFound
from tianfu.core.identity.models import User
from tianfu.core.patients.models import Organization
from tianfu.core.security.permissions import Role
from tianfu.core.security.principal import Principal


def _own_institution(principal: Principal) -> str:
    if principal.organization_id is None:
        raise Invalid("your account belongs to no institution")
    return principal.organization_id


def _record(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    action: str,
    action_type: str,
    resource_type: str,
    resource_id: str = "",
    detail: dict[str, object] | None = None,
    patient_ids: Sequence[str] = (),
) -> None:
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type=action_type,
        resource_type=resource_type,
        resource_id=resource_id,
        patient_ids=patient_ids,
        purpose=principal.purpose,
        detail=detail,
    )


# ---- agreements ----------------------------------------------------------------------------------


def list_agreements(
    session: Session, audit: AuditLog, principal: Principal
) -> Sequence[CooperationAgreement]:
    own = _own_institution(principal)
    rows = session.scalars(
        select(CooperationAgreement)
        .where(
            or_(
                CooperationAgreement.first_institution_id == own,
                CooperationAgreement.second_institution_id == own,
            )
        )
        .order_by(CooperationAgreement.recorded_at.desc())
    ).all()
    _record(session, audit, principal, "consult.agreement.list", "R", "Contract", detail={"count": len(rows)})
    return rows


def create_agreement(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    other_institution_id: str,
    title: str,
    valid_from: datetime,
    valid_until: datetime | None = None,
    document_ref: str = "",
) -> CooperationAgreement:
    own = _own_institution(principal)
    if session.get(Organization, other_institution_id) is None:
        raise NotFound(f"no institution {other_institution_id}")
    if other_institution_id == own:
        raise Invalid("an agreement is between two institutions (TC-01)")
    if valid_until is not None and valid_until <= valid_from:
        raise Invalid("valid_until must come after valid_from")
    row = service.record_agreement(
        session,
        first=own,
        second=other_institution_id,
        title=title,
        valid_from=valid_from,
        valid_until=valid_until,
        document_ref=document_ref,
        by=principal.user_id,
    )
    session.flush()
    _record(
        session,
        audit,
        principal,
        "consult.agreement.create",
        "C",
        "Contract",
        row.id,
        {"institutions": [own, other_institution_id], "valid_from": valid_from.isoformat()},
    )
    return row


def terminate_agreement(
    session: Session, audit: AuditLog, principal: Principal, agreement_id: str, reason: str
) -> CooperationAgreement:
    own = _own_institution(principal)
    row = session.get(CooperationAgreement, agreement_id)
    if row is None or own not in (row.first_institution_id, row.second_institution_id):
        raise NotFound(f"no agreement {agreement_id}")
    if row.status == wf.AgreementStatus.TERMINATED:
        raise Invalid("the agreement is already terminated")
    if not reason.strip():
        raise Invalid("terminating an agreement needs a reason")
    now = utcnow()
    row.status = wf.AgreementStatus.TERMINATED.value
    row.terminated_at = now
    row.terminated_by_id = principal.user_id
    row.termination_reason = reason
    if row.valid_until is None or row.valid_until > now:
        row.valid_until = now
    _record(
        session, audit, principal, "consult.agreement.terminate", "U", "Contract", row.id, {"reason": reason}
    )
    return row


# ---- qualifications ------------------------------------------------------------------------------


def list_qualifications(
    session: Session, audit: AuditLog, principal: Principal
) -> Sequence[ConsultantQualification]:
    own = _own_institution(principal)
    rows = session.scalars(
        select(ConsultantQualification)
        .where(ConsultantQualification.institution_id == own)
        .order_by(ConsultantQualification.recorded_at.desc())
    ).all()
    _record(
        session,
        audit,
        principal,
        "consult.qualification.list",
        "R",
        "PractitionerRole",
        detail={"count": len(rows)},
    )
    return rows


def create_qualification(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    user_id: str,
    specialties: list[str],
    title: int,
    independent_practice_since: date,
    licence_number: str | None = None,
    licence_valid_until: date | None = None,
    licence_suspended: bool = False,
) -> ConsultantQualification:
    own = _own_institution(principal)
    user = session.get(User, user_id)
    if user is None or user.organization_id != own:
        raise NotFound(f"no user {user_id} at your institution")
    if user.role not in (Role.PHYSICIAN, Role.CONSULTANT, Role.RADIOLOGIST):
        raise Invalid("qualifications are recorded for physicians")
    if independent_practice_since > utcnow().date():
        raise Invalid("independent practice cannot start in the future")
    row = service.record_qualification(
        session,
        user=user,
        specialties=specialties,
        title=wf.ProfessionalTitle(title),
        independent_practice_since=independent_practice_since,
        licence_valid_until=licence_valid_until,
        licence_number=licence_number,
        licence_suspended=licence_suspended,
        by=principal.user_id,
    )
    session.flush()
    _record(
        session,
        audit,
        principal,
        "consult.qualification.create",
        "C",
        "PractitionerRole",
        row.id,
        {"user": user.id, "title": title, "specialties": specialties},
    )
    return row


def supersede_qualification(
    session: Session, audit: AuditLog, principal: Principal, qualification_id: str, reason: str
) -> ConsultantQualification:
    """Withdraw a qualification (kept, stamped superseded); assignment then reads the staff directory."""
    own = _own_institution(principal)
    row = session.get(ConsultantQualification, qualification_id)
    if row is None or row.institution_id != own:
        raise NotFound(f"no qualification {qualification_id}")
    if row.superseded_at is not None:
        raise Invalid("the qualification is already superseded")
    if not reason.strip():
        raise Invalid("superseding a qualification needs a reason")
    row.superseded_at = utcnow()
    row.superseded_by_id = principal.user_id
    row.supersede_reason = reason
    _record(
        session,
        audit,
        principal,
        "consult.qualification.supersede",
        "U",
        "PractitionerRole",
        row.id,
        {"user": row.user_id, "reason": reason},
    )
    return row


# ---- legal hold and retention --------------------------------------------------------------------


def set_legal_hold(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str, *, hold: bool, reason: str
) -> Consultation:
    """Place (``hold``) or lift a legal hold (封存); an administrator of either institution, or an auditor."""
    row = session.get(Consultation, consultation_id)
    allowed = principal.role == Role.AUDITOR or (
        principal.role == Role.ADMIN
        and principal.organization_id in (row.inviting_institution_id, row.invited_institution_id)
        if row is not None
        else False
    )
    if row is None or not allowed:
        raise NotFound(f"no consultation {consultation_id}")
    if not reason.strip():
        raise Invalid("a legal hold is placed or lifted with a reason")
    if row.legal_hold == hold:
        raise Invalid("the consultation is already on hold" if hold else "the consultation is not on hold")
    placed_by = session.get(User, row.legal_hold_by_id) if row.legal_hold_by_id else None
    if (
        not hold
        and placed_by is not None
        and placed_by.role == Role.AUDITOR
        and principal.role != Role.AUDITOR
    ):
        raise Forbidden("a hold an auditor placed (an inspection, a dispute) is lifted by an auditor")
    row.legal_hold = hold
    row.legal_hold_reason = reason
    row.legal_hold_by_id = principal.user_id
    row.legal_hold_at = utcnow()
    service.audit_consultation(
        session,
        audit,
        principal,
        row,
        "consult.legal-hold.place" if hold else "consult.legal-hold.lift",
        "U",
        {"reason": reason},
    )
    return row


def retention_review(session: Session, audit: AuditLog, principal: Principal) -> list[retention.DueRecord]:
    """Records past retention and not on hold, for the records office to review. Nothing is deleted."""
    due = retention.past_retention(session)
    _record(
        session, audit, principal, "consult.retention.review", "R", "Consultation", detail={"count": len(due)}
    )
    return due
