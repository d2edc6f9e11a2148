"""The care relationship: which patients a caller may see, and on what basis.

Rules (all roles also see patients they hold an active care grant for, except auditors):
- nurse: patients with a current encounter in one of her wards;
- physician: the same, plus patients whose current encounter names him as attending;
- radiologist: patients with a current encounter at her institution (imaging serves every ward);
- consultant: only patients shared with him (a consultation or another grant);
- admin (registration office): patients registered at, or with an encounter at, the institution;
- patient: herself; auditor: nobody (audit records, not charts).
Break-glass grants give time-limited emergency access with a stated reason, flagged for review.

A "current" encounter is one in progress, or finished less than ``CARE_AFTER_DISCHARGE`` ago: the ward
still writes the discharge summary and answers the patient's questions in the days after discharge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.orm import Session, aliased

from tianfu.core.db import utcnow
from tianfu.core.patients.models import CareGrant, Encounter, Patient
from tianfu.core.security.permissions import PURPOSE_EMERGENCY, Role
from tianfu.core.security.principal import Principal


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    basis: str  # ward, attending, institution, registration, self, grant:<kind>, or why not
    purpose: str


def _active_grant(principal: Principal, now: datetime, kind: str | None = None) -> ColumnElement[bool]:
    clauses = [
        CareGrant.patient_id == Patient.id,
        CareGrant.user_id == principal.user_id,
        CareGrant.revoked_at.is_(None),
        CareGrant.starts_at <= now,
        or_(CareGrant.expires_at.is_(None), CareGrant.expires_at > now),
    ]
    if kind:
        clauses.append(CareGrant.kind == kind)
    return exists().where(*clauses)


CARE_AFTER_DISCHARGE = timedelta(hours=72)

# An alias, so that the condition also works inside queries that select from Encounter themselves.
_stay = aliased(Encounter)


def _active_encounter(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    current = or_(
        _stay.status == "in-progress",
        and_(_stay.status == "finished", _stay.period_end > utcnow() - CARE_AFTER_DISCHARGE),
    )
    return exists().where(_stay.patient_id == Patient.id, current, *conditions)


def _relationship_clauses(principal: Principal) -> dict[str, ColumnElement[bool]]:
    """Each basis of access for this caller, as a SQL condition on Patient."""
    role = principal.role
    wards = list(principal.ward_ids)
    if role == Role.NURSE:
        return {"ward": _active_encounter(_stay.ward_id.in_(wards))} if wards else {}
    if role == Role.PHYSICIAN:
        clauses = {"attending": _active_encounter(_stay.attending_id == principal.user_id)}
        if wards:
            clauses["ward"] = _active_encounter(_stay.ward_id.in_(wards))
        return clauses
    if role == Role.RADIOLOGIST and principal.organization_id:
        return {"institution": _active_encounter(_stay.organization_id == principal.organization_id)}
    if role == Role.ADMIN and principal.organization_id:
        return {
            "registration": or_(
                Patient.managing_organization_id == principal.organization_id,
                exists().where(
                    _stay.patient_id == Patient.id, _stay.organization_id == principal.organization_id
                ),
            )
        }
    if role == Role.PATIENT and principal.patient_id:
        return {"self": Patient.id == principal.patient_id}
    return {}


def visible_patients(principal: Principal, now: datetime | None = None) -> ColumnElement[bool]:
    """A WHERE clause on Patient selecting exactly the patients this caller may see."""
    if principal.role == Role.AUDITOR:
        return false()
    now = now or utcnow()
    clauses = list(_relationship_clauses(principal).values())
    if principal.role != Role.PATIENT:
        clauses.append(_active_grant(principal, now))
    if not clauses:
        return false()
    return and_(Patient.voided.is_(False), or_(*clauses))


def decide(session: Session, principal: Principal, patient_id: str) -> AccessDecision:
    """Whether this caller may see this patient, and on which basis (written into the audit record)."""
    if principal.role == Role.AUDITOR:
        return AccessDecision(False, "auditors read the audit trail, not charts", principal.purpose)
    now = utcnow()
    for basis, clause in _relationship_clauses(principal).items():
        if session.scalar(select(true()).where(Patient.id == patient_id, Patient.voided.is_(False), clause)):
            return AccessDecision(True, basis, principal.purpose)
    if principal.role != Role.PATIENT:
        kinds = session.scalars(
            select(CareGrant.kind).where(
                CareGrant.patient_id == patient_id,
                CareGrant.user_id == principal.user_id,
                CareGrant.revoked_at.is_(None),
                CareGrant.starts_at <= now,
                or_(CareGrant.expires_at.is_(None), CareGrant.expires_at > now),
            )
        ).all()
        if kinds:
            # A standing relationship (a consultation) is preferred over an emergency grant in the record.
            kind = next((k for k in kinds if k != "break_glass"), "break_glass")
            purpose = PURPOSE_EMERGENCY if kind == "break_glass" else principal.purpose
            return AccessDecision(True, f"grant:{kind}", purpose)
    return AccessDecision(False, "no care relationship with this patient", principal.purpose)
