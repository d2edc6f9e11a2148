"""The shared patient record: registration, search, admission/transfer/discharge, emergency access.

Every function that reads or writes patient data checks the caller's care relationship and writes an
audit record in the same transaction; a refused access is audited too, and that record is committed
even though the request fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Conflict, Forbidden, Invalid, NotFound
from tianfu.core.identity.models import User
from tianfu.core.patients.models import CareGrant, Encounter, Location, Organization, Patient
from tianfu.core.security import access
from tianfu.core.security.permissions import CLINICAL_ROLES, Role
from tianfu.core.security.principal import Principal

GENDERS = ("male", "female", "other", "unknown")
ENCOUNTER_CLASSES = ("IMP", "EMER", "AMB", "VR")


def mask_national_id(value: str) -> str:
    return value[:4] + "*" * (len(value) - 8) + value[-4:] if len(value) > 8 else "*" * len(value)


# --- reading -----------------------------------------------------------------------------------------


def _audit_read(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    action: str,
    patient_ids: Sequence[str],
    resource_type: str = "Patient",
    resource_id: str = "",
    purpose: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="R",
        resource_type=resource_type,
        resource_id=resource_id,
        patient_ids=patient_ids,
        purpose=purpose or principal.purpose,
        detail=detail,
    )


def require_access(
    session: Session, audit: AuditLog, principal: Principal, patient_id: str, *, action: str
) -> tuple[Patient, access.AccessDecision]:
    """The patient, if it exists and the caller may see it; a refusal is audited and committed."""
    patient = session.get(Patient, patient_id)
    if patient is None or patient.voided:
        raise NotFound(f"no patient {patient_id}")
    decision = access.decide(session, principal, patient_id)
    if not decision.allowed:
        session.rollback()
        audit.record(
            session,
            actor=principal.actor,
            action=action,
            action_type="R",
            outcome=OUTCOME_MINOR_FAILURE,
            outcome_desc=f"denied: {decision.basis}",
            resource_type="Patient",
            resource_id=patient_id,
            patient_ids=[patient_id],
            purpose=decision.purpose,
        )
        session.commit()
        raise Forbidden(f"you have no care relationship with patient {patient_id}")
    return patient, decision


def read_patient(session: Session, audit: AuditLog, principal: Principal, patient_id: str) -> Patient:
    patient, decision = require_access(session, audit, principal, patient_id, action="patient.read")
    _audit_read(
        session,
        audit,
        principal,
        action="patient.read",
        patient_ids=[patient.id],
        resource_id=patient.id,
        purpose=decision.purpose,
        detail={"basis": decision.basis},
    )
    return patient


@dataclass
class PatientQuery:
    text: str = ""  # name, MRN or phone fragment
    name: str = ""  # name fragment only (FHIR ``name``)
    identifier: str = ""  # exact MRN or national ID (FHIR ``identifier``)
    ward_id: str | None = None
    admitted_only: bool = False
    gender: str | None = None
    birth_date: date | None = None
    ids: Sequence[str] = field(default_factory=tuple)
    limit: int = 50
    offset: int = 0


def _patient_select(principal: Principal, query: PatientQuery) -> Select[Patient]:
    stmt = select(Patient).where(access.visible_patients(principal))
    if query.text:
        like = f"%{query.text.strip()}%"
        stmt = stmt.where(or_(Patient.name.ilike(like), Patient.mrn.ilike(like), Patient.phone.ilike(like)))
    if query.name:
        stmt = stmt.where(
            or_(
                Patient.name.ilike(f"%{query.name.strip()}%"),
                Patient.family_name.ilike(f"{query.name.strip()}%"),
                Patient.given_name.ilike(f"{query.name.strip()}%"),
            )
        )
    if query.identifier:
        stmt = stmt.where(
            or_(Patient.mrn == query.identifier, Patient.national_id == query.identifier.upper())
        )
    if query.ward_id or query.admitted_only:
        conditions = [Encounter.patient_id == Patient.id, Encounter.status == "in-progress"]
        if query.ward_id:
            conditions.append(Encounter.ward_id == query.ward_id)
        stmt = stmt.where(select(Encounter.id).where(*conditions).exists())
    if query.gender:
        stmt = stmt.where(Patient.gender == query.gender)
    if query.birth_date:
        stmt = stmt.where(Patient.birth_date == query.birth_date)
    if query.ids:
        stmt = stmt.where(Patient.id.in_(list(query.ids)))
    return stmt


def search_patients(
    session: Session, audit: AuditLog, principal: Principal, query: PatientQuery
) -> tuple[Sequence[Patient], int]:
    stmt = _patient_select(principal, query)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    # Ward order: by bed (as a nurse walks the ward), then patients without a bed, by name.
    current = aliased(Encounter)
    bed = aliased(Location)
    rows = session.scalars(
        stmt.outerjoin(current, (current.patient_id == Patient.id) & (current.status == "in-progress"))
        .outerjoin(bed, bed.id == current.bed_id)
        .options(selectinload(Patient.encounters).joinedload(Encounter.bed))
        .order_by(bed.code.is_(None), bed.code, Patient.name, Patient.id)
        .limit(query.limit)
        .offset(query.offset)
    ).all()
    _audit_read(
        session,
        audit,
        principal,
        action="patient.search",
        patient_ids=[p.id for p in rows],
        detail={
            "text": query.text or query.name or query.identifier,
            "ward_id": query.ward_id,
            "returned": len(rows),
            "total": total,
        },
    )
    return rows, total


def current_encounter(patient: Patient) -> Encounter | None:
    return next((e for e in patient.encounters if e.status == "in-progress"), None)


def list_encounters(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    patient_id: str | None = None,
    status: str | None = None,
    ward_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Encounter], int]:
    stmt = (
        select(Encounter)
        .join(Patient, Patient.id == Encounter.patient_id)
        .where(access.visible_patients(principal))
    )
    if patient_id:
        stmt = stmt.where(Encounter.patient_id == patient_id)
    if status:
        stmt = stmt.where(Encounter.status == status)
    if ward_id:
        stmt = stmt.where(Encounter.ward_id == ward_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.options(joinedload(Encounter.ward), joinedload(Encounter.bed), joinedload(Encounter.attending))
        .order_by(Encounter.period_start.desc(), Encounter.id)
        .limit(limit)
        .offset(offset)
    ).all()
    _audit_read(
        session,
        audit,
        principal,
        action="encounter.search",
        resource_type="Encounter",
        patient_ids=[e.patient_id for e in rows],
        detail={"returned": len(rows), "total": total},
    )
    return rows, total


def read_encounter(session: Session, audit: AuditLog, principal: Principal, encounter_id: str) -> Encounter:
    encounter = session.get(Encounter, encounter_id)
    if encounter is None:
        raise NotFound(f"no encounter {encounter_id}")
    _, decision = require_access(session, audit, principal, encounter.patient_id, action="encounter.read")
    _audit_read(
        session,
        audit,
        principal,
        action="encounter.read",
        resource_type="Encounter",
        resource_id=encounter.id,
        patient_ids=[encounter.patient_id],
        purpose=decision.purpose,
    )
    return encounter


# --- registration ------------------------------------------------------------------------------------


@dataclass
class PatientFields:
    name: str
    gender: str
    mrn: str | None = None
    family_name: str = ""
    given_name: str = ""
    birth_date: date | None = None
    national_id: str = ""
    phone: str = ""
    address: str = ""


def _validate_fields(fields: PatientFields) -> None:
    if not fields.name.strip():
        raise Invalid("name is required")
    if fields.gender not in GENDERS:
        raise Invalid(f"gender must be one of {', '.join(GENDERS)}")
    if fields.birth_date and fields.birth_date > utcnow().date():
        raise Invalid("birth date is in the future")
    if fields.national_id and not _valid_chinese_id(fields.national_id):
        raise Invalid("national ID (居民身份证号) is not valid: 18 characters with a correct check digit")


def _valid_chinese_id(value: str) -> bool:
    """GB 11643-1999: 17 digits and an ISO 7064 MOD 11-2 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(value[:17], weights, strict=True)) % 11]
    return value[17].upper() == check


def _next_mrn(session: Session, organization: Organization) -> str:
    """The next free number after the count of patients (skipping numbers typed in by hand)."""
    number = (
        session.scalar(
            select(func.count())
            .select_from(Patient)
            .where(Patient.managing_organization_id == organization.id)
        )
        or 0
    )
    while True:
        number += 1
        mrn = f"{organization.code}-{number:06d}"
        taken = session.scalar(
            select(Patient.id).where(Patient.managing_organization_id == organization.id, Patient.mrn == mrn)
        )
        if taken is None:
            return mrn


def register_patient(
    session: Session, audit: AuditLog, principal: Principal, fields: PatientFields
) -> Patient:
    if principal.organization_id is None:
        raise Forbidden("only staff of an institution can register patients")
    _validate_fields(fields)
    organization = session.get(Organization, principal.organization_id)
    if organization is None:
        raise NotFound("your institution no longer exists")
    mrn = (fields.mrn or "").strip() or _next_mrn(session, organization)
    if session.scalar(
        select(Patient.id).where(Patient.managing_organization_id == organization.id, Patient.mrn == mrn)
    ):
        raise Conflict(f"MRN {mrn} is already used at {organization.name}")
    patient = Patient(
        mrn=mrn,
        managing_organization_id=organization.id,
        name=fields.name.strip(),
        family_name=fields.family_name.strip(),
        given_name=fields.given_name.strip(),
        gender=fields.gender,
        birth_date=fields.birth_date,
        national_id=fields.national_id.upper(),
        phone=fields.phone.strip(),
        address=fields.address.strip(),
    )
    try:
        with session.begin_nested():
            session.add(patient)
            session.flush()
    except IntegrityError as exc:  # another registration took the same MRN a moment ago
        raise Conflict(f"MRN {mrn} was just taken; please submit again") from exc
    audit.record(
        session,
        actor=principal.actor,
        action="patient.create",
        action_type="C",
        resource_type="Patient",
        resource_id=patient.id,
        patient_ids=[patient.id],
        purpose=principal.purpose,
    )
    enqueue(
        session, "tianfu.patient.registered", {"patient_id": patient.id, "organization_id": organization.id}
    )
    return patient


def update_patient(
    session: Session, audit: AuditLog, principal: Principal, patient_id: str, changes: dict[str, Any]
) -> Patient:
    patient, decision = require_access(session, audit, principal, patient_id, action="patient.update")
    allowed = {"name", "family_name", "given_name", "gender", "birth_date", "national_id", "phone", "address"}
    unknown = set(changes) - allowed
    if unknown:
        raise Invalid(f"cannot change {', '.join(sorted(unknown))}")
    merged = PatientFields(
        name=changes.get("name", patient.name),
        gender=changes.get("gender", patient.gender),
        birth_date=changes.get("birth_date", patient.birth_date),
        national_id=changes.get("national_id", patient.national_id),
    )
    _validate_fields(merged)
    changed = {}
    for key, value in changes.items():
        if getattr(patient, key) != value:
            # Keep the earlier value in the audit trail: EMR rules require every edit to stay traceable.
            old = getattr(patient, key)
            changed[key] = {"from": _jsonable(old, key), "to": _jsonable(value, key)}
            setattr(patient, key, value)
    if changed:
        audit.record(
            session,
            actor=principal.actor,
            action="patient.update",
            action_type="U",
            resource_type="Patient",
            resource_id=patient.id,
            patient_ids=[patient.id],
            purpose=decision.purpose,
            detail={"changed": changed},
        )
        enqueue(session, "tianfu.patient.updated", {"patient_id": patient.id, "fields": sorted(changed)})
    return patient


def _jsonable(value: Any, key: str) -> Any:
    if key == "national_id" and isinstance(value, str):
        return mask_national_id(value)
    return value.isoformat() if isinstance(value, date) else value


# --- admission, transfer, discharge ------------------------------------------------------------------


def _ward_and_bed(
    session: Session, principal: Principal, ward_id: str, bed_id: str | None
) -> tuple[Location, Location | None]:
    ward = session.get(Location, ward_id)
    if ward is None or ward.kind != "ward" or not ward.active:
        raise Invalid("unknown ward")
    if ward.organization_id != principal.organization_id:
        raise Forbidden("you can only place patients in wards of your own institution")
    if principal.role == Role.NURSE and ward.id not in principal.ward_ids:
        # Moving a patient to another ward is a physician's or the registration office's decision.
        raise Forbidden("nurses admit and transfer only into their own wards")
    bed = None
    if bed_id:
        bed = session.get(Location, bed_id)
        if bed is None or bed.kind != "bed" or not _is_inside(session, bed, ward.id):
            raise Invalid("that bed is not in this ward")
        occupied = session.scalar(
            select(Encounter.id).where(Encounter.bed_id == bed.id, Encounter.status == "in-progress")
        )
        if occupied:
            raise Conflict(f"bed {bed.name} is occupied")
    return ward, bed


def _is_inside(session: Session, location: Location, ancestor_id: str) -> bool:
    current: Location | None = location
    for _ in range(8):
        if current is None or current.parent_id is None:
            return False
        if current.parent_id == ancestor_id:
            return True
        current = session.get(Location, current.parent_id)
    return False


def _refuse(
    session: Session, audit: AuditLog, principal: Principal, patient_id: str, action: str, why: str
) -> None:
    """Audit a refused change, commit that record, and raise."""
    session.rollback()
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="U",
        outcome=OUTCOME_MINOR_FAILURE,
        outcome_desc=f"denied: {why}",
        resource_type="Patient",
        resource_id=patient_id,
        patient_ids=[patient_id],
        purpose=principal.purpose,
    )
    session.commit()
    raise Forbidden(why)


def _check_admission_rights(
    session: Session, audit: AuditLog, principal: Principal, patient: Patient
) -> None:
    """Admitting: registration staff of the patient's institution, or its clinicians (the admission then
    creates the care relationship; nurses admit only into their own wards, checked with the ward)."""
    same_institution = patient.managing_organization_id == principal.organization_id
    if principal.role in CLINICAL_ROLES | {Role.ADMIN} and same_institution:
        return
    if principal.role in CLINICAL_ROLES and access.decide(session, principal, patient.id).allowed:
        return
    _refuse(session, audit, principal, patient.id, "encounter.admit", "you cannot admit this patient")


def _check_stay_rights(
    session: Session, audit: AuditLog, principal: Principal, encounter: Encounter, action: str
) -> None:
    """Transferring or discharging: registration staff of the institution, or clinicians who care for the
    patient now (a nurse of another ward may not move or discharge someone else's patient)."""
    if principal.role == Role.ADMIN and encounter.organization_id == principal.organization_id:
        return
    if principal.role in CLINICAL_ROLES and access.decide(session, principal, encounter.patient_id).allowed:
        return
    _refuse(session, audit, principal, encounter.patient_id, action, "you do not care for this patient")


def admit(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    patient_id: str,
    *,
    ward_id: str,
    bed_id: str | None = None,
    attending_id: str | None = None,
    encounter_class: str = "IMP",
    reason: str = "",
) -> Encounter:
    patient = session.get(Patient, patient_id)
    if patient is None or patient.voided:
        raise NotFound(f"no patient {patient_id}")
    _check_admission_rights(session, audit, principal, patient)
    if encounter_class not in ENCOUNTER_CLASSES:
        raise Invalid(f"encounter class must be one of {', '.join(ENCOUNTER_CLASSES)}")
    if session.scalar(
        select(Encounter.id).where(Encounter.patient_id == patient.id, Encounter.status == "in-progress")
    ):
        raise Conflict("the patient is already admitted; transfer or discharge first")
    ward, bed = _ward_and_bed(session, principal, ward_id, bed_id)
    if attending_id:
        attending = session.get(User, attending_id)
        if (
            attending is None
            or attending.role != Role.PHYSICIAN
            or attending.organization_id != ward.organization_id
        ):
            raise Invalid("the attending must be a physician of the same institution")
    encounter = Encounter(
        patient_id=patient.id,
        organization_id=ward.organization_id,
        encounter_class=encounter_class,
        status="in-progress",
        ward_id=ward.id,
        bed_id=bed.id if bed else None,
        attending_id=attending_id,
        reason=reason.strip(),
    )
    session.add(encounter)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="encounter.admit",
        action_type="C",
        resource_type="Encounter",
        resource_id=encounter.id,
        patient_ids=[patient.id],
        purpose=principal.purpose,
        detail={"ward": ward.code, "bed": bed.code if bed else None},
    )
    enqueue(session, "tianfu.encounter.admitted", _encounter_event(encounter))
    return encounter


def transfer(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    encounter_id: str,
    *,
    ward_id: str,
    bed_id: str | None,
) -> Encounter:
    encounter = _open_encounter(session, audit, principal, encounter_id, "encounter.transfer")
    if encounter.ward_id == ward_id and encounter.bed_id == bed_id:
        raise Invalid("the patient is already in that ward and bed")
    ward, bed = _ward_and_bed(session, principal, ward_id, bed_id)
    before = {"ward_id": encounter.ward_id, "bed_id": encounter.bed_id}
    encounter.ward_id = ward.id
    encounter.bed_id = bed.id if bed else None
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="encounter.transfer",
        action_type="U",
        resource_type="Encounter",
        resource_id=encounter.id,
        patient_ids=[encounter.patient_id],
        purpose=principal.purpose,
        detail={"from": before, "to": {"ward": ward.code, "bed": bed.code if bed else None}},
    )
    enqueue(session, "tianfu.encounter.transferred", _encounter_event(encounter) | {"from": before})
    return encounter


def discharge(session: Session, audit: AuditLog, principal: Principal, encounter_id: str) -> Encounter:
    encounter = _open_encounter(session, audit, principal, encounter_id, "encounter.discharge")
    encounter.status = "finished"
    encounter.period_end = utcnow()
    audit.record(
        session,
        actor=principal.actor,
        action="encounter.discharge",
        action_type="U",
        resource_type="Encounter",
        resource_id=encounter.id,
        patient_ids=[encounter.patient_id],
        purpose=principal.purpose,
    )
    enqueue(session, "tianfu.encounter.discharged", _encounter_event(encounter))
    return encounter


def _open_encounter(
    session: Session, audit: AuditLog, principal: Principal, encounter_id: str, action: str
) -> Encounter:
    encounter = session.get(Encounter, encounter_id)
    if encounter is None:
        raise NotFound(f"no encounter {encounter_id}")
    if encounter.organization_id != principal.organization_id:
        _refuse(
            session, audit, principal, encounter.patient_id, action, "the stay belongs to another institution"
        )
    _check_stay_rights(session, audit, principal, encounter, action)
    if encounter.status != "in-progress":
        raise Conflict(f"the encounter is {encounter.status}")
    return encounter


def _encounter_event(encounter: Encounter) -> dict[str, Any]:
    return {
        "encounter_id": encounter.id,
        "patient_id": encounter.patient_id,
        "organization_id": encounter.organization_id,
        "ward_id": encounter.ward_id,
        "bed_id": encounter.bed_id,
        "status": encounter.status,
    }


# --- grants ------------------------------------------------------------------------------------------


def break_glass(
    session: Session, audit: AuditLog, principal: Principal, patient_id: str, *, reason: str, minutes: int
) -> CareGrant:
    """Emergency access: allowed with a reason, time-limited, flagged in the audit trail for review."""
    patient = session.get(Patient, patient_id)
    if patient is None or patient.voided:
        raise NotFound(f"no patient {patient_id}")
    if len(reason.strip()) < 10:
        raise Invalid("state the emergency in at least 10 characters")
    now = utcnow()
    # A second emergency access (a double click, or the emergency going on) extends the open grant.
    grant = session.scalar(
        select(CareGrant).where(
            CareGrant.user_id == principal.user_id,
            CareGrant.patient_id == patient.id,
            CareGrant.kind == "break_glass",
            CareGrant.revoked_at.is_(None),
            CareGrant.expires_at > now,
        )
    )
    if grant is None:
        grant = CareGrant(
            user_id=principal.user_id,
            patient_id=patient.id,
            kind="break_glass",
            granted_by_id=principal.user_id,
            starts_at=now,
        )
        session.add(grant)
    grant.reason = reason.strip()
    grant.expires_at = now + timedelta(minutes=minutes)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="patient.break_glass",
        action_type="E",
        resource_type="Patient",
        resource_id=patient.id,
        patient_ids=[patient.id],
        purpose="ETREAT",
        detail={
            "reason": grant.reason,
            "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
            "review": "required",
        },
    )
    enqueue(
        session,
        "tianfu.patient.break_glass",
        {"patient_id": patient.id, "user_id": principal.user_id, "grant_id": grant.id},
    )
    return grant


def grant_access(
    session: Session,
    audit: AuditLog,
    *,
    granted_by: Principal,
    user_id: str,
    patient_id: str,
    kind: str,
    reason: str,
    expires_at: datetime | None,
) -> CareGrant:
    """Share a patient with another clinician (used by modules, e.g. a consultation's consultant)."""
    grant = CareGrant(
        user_id=user_id,
        patient_id=patient_id,
        kind=kind,
        reason=reason,
        granted_by_id=granted_by.user_id,
        expires_at=expires_at,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        actor=granted_by.actor,
        action="patient.grant",
        action_type="C",
        resource_type="CareGrant",
        resource_id=grant.id,
        patient_ids=[patient_id],
        purpose=granted_by.purpose,
        detail={"to_user": user_id, "kind": kind, "reason": reason},
    )
    return grant


# --- directory ---------------------------------------------------------------------------------------


def organizations(session: Session) -> Sequence[Organization]:
    return session.scalars(select(Organization).order_by(Organization.code)).all()


def locations(
    session: Session,
    *,
    organization_id: str | None = None,
    kind: str | None = None,
    parent_id: str | None = None,
) -> Sequence[Location]:
    stmt = select(Location).order_by(Location.organization_id, Location.code)
    if organization_id:
        stmt = stmt.where(Location.organization_id == organization_id)
    if kind:
        stmt = stmt.where(Location.kind == kind)
    if parent_id:
        stmt = stmt.where(Location.parent_id == parent_id)
    return session.scalars(stmt).all()


@dataclass(frozen=True)
class WardCensus:
    ward: Location
    beds: int
    occupied: int


def ward_census(session: Session, organization_id: str | None) -> list[WardCensus]:
    wards = locations(session, organization_id=organization_id, kind="ward")
    result = []
    for ward in wards:
        bed_ids = _beds_under(session, ward.id)
        occupied = (
            session.scalar(
                select(func.count())
                .select_from(Encounter)
                .where(Encounter.status == "in-progress", Encounter.ward_id == ward.id)
            )
            or 0
        )
        result.append(WardCensus(ward, len(bed_ids), occupied))
    return result


def _beds_under(session: Session, ward_id: str) -> list[str]:
    found: list[str] = []
    frontier = [ward_id]
    while frontier:
        children = session.execute(
            select(Location.id, Location.kind).where(Location.parent_id.in_(frontier))
        ).all()
        found.extend(i for i, kind in children if kind == "bed")
        frontier = [i for i, kind in children if kind != "bed"]
    return found


def beds_of_ward(session: Session, ward_id: str) -> Sequence[Location]:
    ids = _beds_under(session, ward_id)
    return session.scalars(select(Location).where(Location.id.in_(ids)).order_by(Location.code)).all()


def staff(session: Session, *, organization_id: str | None = None, role: str | None = None) -> Sequence[User]:
    stmt = select(User).where(User.role != Role.PATIENT, User.is_active.is_(True)).order_by(User.username)
    if organization_id:
        stmt = stmt.where(User.organization_id == organization_id)
    if role:
        stmt = stmt.where(User.role == role)
    return session.scalars(stmt).all()
