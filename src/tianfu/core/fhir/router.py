"""/fhir/R4: read and search for the kernel's resources, with the same access rules as /api/v1.

Search follows FHIR's lenient handling: unknown parameters are ignored and left out of the Bundle's
``self`` link. Paging uses ``_count`` and ``_offset``. Errors are OperationOutcome resources.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tianfu import __version__
from tianfu.core.audit import service as audit_service
from tianfu.core.audit.models import AuditRecord
from tianfu.core.audit.views import record_meta_access
from tianfu.core.errors import Invalid, NotFound
from tianfu.core.fhir import translators
from tianfu.core.http.deps import PUBLIC, DbDep, KernelDep, require
from tianfu.core.http.problems import FHIR_MEDIA_TYPE
from tianfu.core.identity.models import User
from tianfu.core.patients import service
from tianfu.core.patients.models import Encounter, Location, Organization
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal

BASE = "/fhir/R4"


class FhirResponse(JSONResponse):
    media_type = FHIR_MEDIA_TYPE


_OUTCOME_SCHEMA = {"type": "object", "properties": {"resourceType": {"const": "OperationOutcome"}}}
FHIR_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {FHIR_MEDIA_TYPE: {"schema": _OUTCOME_SCHEMA}}}
    for status, description in (
        (400, "Bad request"),
        (401, "Authentication required"),
        (403, "Forbidden"),
        (404, "Not found"),
        (413, "Too large"),
        (422, "Invalid"),
    )
}
_RESOURCE = {
    "description": "A FHIR resource or Bundle",
    "content": {FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}},
}

router = APIRouter(prefix=BASE, tags=["FHIR R4"], default_response_class=FhirResponse, responses=FHIR_ERRORS)

Count = Annotated[int, Query(alias="_count", ge=1, le=200)]
Offset = Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)]
Reader = Annotated[Principal, Depends(require(Permission.PATIENT_READ))]
DirectoryReader = Annotated[Principal, Depends(require(Permission.DIRECTORY_READ))]
SEARCH_PARAMS = {
    "Patient": ["_id", "name", "identifier", "gender", "birthdate"],
    "Encounter": ["_id", "patient", "subject", "status", "location"],
    "Practitioner": ["_id", "name", "identifier"],
    "Organization": ["_id", "name", "identifier"],
    "Location": ["_id", "name", "organization", "partof"],
    "AuditEvent": ["_id", "patient", "agent", "date", "action", "subtype"],
}


def register_search(resource_type: str, params: list[str]) -> None:
    """A module serving another resource type: its search parameters (also listed in the metadata)."""
    SEARCH_PARAMS[resource_type] = params


def searchset(
    request: Request, resource_type: str, resources: list[dict[str, Any]], total: int, count: int, offset: int
) -> FhirResponse:
    base_url = str(request.base_url).rstrip("/")
    known = set(SEARCH_PARAMS[resource_type])
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in known]

    def page_link(at: int) -> str:
        return f"{base_url}{BASE}/{resource_type}?" + urlencode([*kept, ("_count", count), ("_offset", at)])

    links = [{"relation": "self", "url": page_link(offset)}]
    if offset + count < total:
        links.append({"relation": "next", "url": page_link(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page_link(max(0, offset - count))})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url}{BASE}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    return FhirResponse(translators.dump(Bundle.model_validate(bundle)))


def _reference_id(value: str | None, resource_type: str) -> str | None:
    if not value:
        return None
    return value.split("/", 1)[1] if value.startswith(f"{resource_type}/") else value


def _fhir_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(f"not a calendar date: {value}") from exc


def _org_codes(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Organization.id, Organization.code)).all())


# --- metadata ----------------------------------------------------------------------------------------


@router.get(
    "/metadata", dependencies=[Depends(PUBLIC)], responses={200: _RESOURCE}, summary="CapabilityStatement"
)
def capability_statement(request: Request) -> FhirResponse:
    def resource(kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {
                    "name": n,
                    "type": "token"
                    if n in {"_id", "identifier", "gender", "status", "action", "subtype"}
                    else "reference"
                    if n in {"patient", "subject", "location", "organization", "partof"}
                    else "date"
                    if n in {"birthdate", "date"}
                    else "string",
                }
                for n in SEARCH_PARAMS[kind]
            ],
        }

    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-27",
        "kind": "instance",
        "software": {"name": "Tianfu 天府智医", "version": __version__},
        "implementation": {
            "description": "Tianfu FHIR R4 endpoint",
            "url": str(request.base_url).rstrip("/") + BASE,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "Basic",
                                }
                            ],
                            "text": "Bearer token from /api/v1/auth/token",
                        }
                    ]
                },
                "resource": [resource(k) for k in SEARCH_PARAMS],
            }
        ],
    }
    return FhirResponse(translators.dump(CapabilityStatement.model_validate(statement)))


# --- Patient -----------------------------------------------------------------------------------------


@router.get("/Patient", responses={200: _RESOURCE}, summary="Search Patient")
def search_patient(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    _id: Annotated[str | None, Query(alias="_id", max_length=36)] = None,
    name: Annotated[str, Query(max_length=100)] = "",
    identifier: Annotated[str, Query(max_length=200)] = "",
    gender: Annotated[str | None, Query(pattern="^(male|female|other|unknown)$")] = None,
    birthdate: Annotated[str | None, Query(pattern=r"^(eq)?\d{4}-\d{2}-\d{2}$")] = None,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    query = service.PatientQuery(
        name=name,
        identifier=identifier.split("|", 1)[-1],
        gender=gender,
        birth_date=_fhir_date(birthdate.removeprefix("eq")) if birthdate else None,
        ids=[_id] if _id else (),
        limit=count,
        offset=offset,
    )
    rows, total = service.search_patients(session, kernel.audit, principal, query)
    session.commit()
    codes = _org_codes(session)
    return searchset(
        request,
        "Patient",
        [translators.patient(p, codes.get(p.managing_organization_id, "")) for p in rows],
        total,
        count,
        offset,
    )


@router.get("/Patient/{patient_id}", responses={200: _RESOURCE}, summary="Read Patient")
def read_patient(kernel: KernelDep, session: DbDep, principal: Reader, patient_id: str) -> FhirResponse:
    patient = service.read_patient(session, kernel.audit, principal, patient_id)
    session.commit()
    code = (
        session.scalar(select(Organization.code).where(Organization.id == patient.managing_organization_id))
        or ""
    )
    return FhirResponse(translators.patient(patient, code))


# --- Encounter ---------------------------------------------------------------------------------------


@router.get("/Encounter", responses={200: _RESOURCE}, summary="Search Encounter")
def search_encounter(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    _id: Annotated[str | None, Query(alias="_id", max_length=36)] = None,
    patient: Annotated[str | None, Query(max_length=50)] = None,
    subject: Annotated[str | None, Query(max_length=50)] = None,
    status: Annotated[str | None, Query(pattern="^(planned|in-progress|finished|cancelled)$")] = None,
    location: Annotated[str | None, Query(max_length=50)] = None,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    if _id:
        try:
            rows: list[Encounter] = [service.read_encounter(session, kernel.audit, principal, _id)]
        except NotFound:
            rows = []
        session.commit()
        return searchset(request, "Encounter", [translators.encounter(e) for e in rows], len(rows), count, 0)
    found, total = service.list_encounters(
        session,
        kernel.audit,
        principal,
        patient_id=_reference_id(patient or subject, "Patient"),
        status=status,
        ward_id=_reference_id(location, "Location"),
        limit=count,
        offset=offset,
    )
    session.commit()
    return searchset(request, "Encounter", [translators.encounter(e) for e in found], total, count, offset)


@router.get("/Encounter/{encounter_id}", responses={200: _RESOURCE}, summary="Read Encounter")
def read_encounter(kernel: KernelDep, session: DbDep, principal: Reader, encounter_id: str) -> FhirResponse:
    encounter = service.read_encounter(session, kernel.audit, principal, encounter_id)
    session.commit()
    return FhirResponse(translators.encounter(encounter))


# --- directory: Practitioner, Organization, Location -------------------------------------------------


def _paged(session: Session, stmt: Any, count: int, offset: int) -> tuple[list[Any], int]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    return list(session.scalars(stmt.limit(count).offset(offset))), total


@router.get("/Practitioner", responses={200: _RESOURCE}, summary="Search Practitioner")
def search_practitioner(
    request: Request,
    session: DbDep,
    _: DirectoryReader,
    _id: Annotated[str | None, Query(alias="_id", max_length=36)] = None,
    name: Annotated[str, Query(max_length=100)] = "",
    identifier: Annotated[str, Query(max_length=200)] = "",
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    stmt = select(User).where(User.role != Role.PATIENT).order_by(User.username)
    if _id:
        stmt = stmt.where(User.id == _id)
    if name:
        stmt = stmt.where(User.display_name.ilike(f"%{name}%"))
    if identifier:
        stmt = stmt.where(User.licence_number == identifier.split("|", 1)[-1])
    rows, total = _paged(session, stmt, count, offset)
    return searchset(
        request, "Practitioner", [translators.practitioner(u) for u in rows], total, count, offset
    )


@router.get("/Practitioner/{user_id}", responses={200: _RESOURCE}, summary="Read Practitioner")
def read_practitioner(session: DbDep, _: DirectoryReader, user_id: str) -> FhirResponse:
    user = session.get(User, user_id)
    if user is None or user.role == Role.PATIENT:
        raise NotFound(f"no Practitioner/{user_id}")
    return FhirResponse(translators.practitioner(user))


@router.get("/Organization", responses={200: _RESOURCE}, summary="Search Organization")
def search_organization(
    request: Request,
    session: DbDep,
    _: DirectoryReader,
    _id: Annotated[str | None, Query(alias="_id", max_length=36)] = None,
    name: Annotated[str, Query(max_length=100)] = "",
    identifier: Annotated[str, Query(max_length=200)] = "",
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    stmt = select(Organization).order_by(Organization.code)
    if _id:
        stmt = stmt.where(Organization.id == _id)
    if name:
        stmt = stmt.where(or_(Organization.name.ilike(f"%{name}%"), Organization.name_en.ilike(f"%{name}%")))
    if identifier:
        stmt = stmt.where(Organization.code == identifier.split("|", 1)[-1])
    rows, total = _paged(session, stmt, count, offset)
    return searchset(
        request, "Organization", [translators.organization(o) for o in rows], total, count, offset
    )


@router.get("/Organization/{organization_id}", responses={200: _RESOURCE}, summary="Read Organization")
def read_organization(session: DbDep, _: DirectoryReader, organization_id: str) -> FhirResponse:
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(f"no Organization/{organization_id}")
    return FhirResponse(translators.organization(organization))


def _occupied_beds(session: Session) -> set[str]:
    return set(
        session.scalars(
            select(Encounter.bed_id).where(Encounter.status == "in-progress", Encounter.bed_id.is_not(None))
        )
    )


@router.get("/Location", responses={200: _RESOURCE}, summary="Search Location")
def search_location(
    request: Request,
    session: DbDep,
    _: DirectoryReader,
    _id: Annotated[str | None, Query(alias="_id", max_length=36)] = None,
    name: Annotated[str, Query(max_length=100)] = "",
    organization: Annotated[str | None, Query(max_length=60)] = None,
    partof: Annotated[str | None, Query(max_length=60)] = None,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    stmt = select(Location).order_by(Location.organization_id, Location.code)
    if _id:
        stmt = stmt.where(Location.id == _id)
    if name:
        stmt = stmt.where(Location.name.ilike(f"%{name}%"))
    if organization:
        stmt = stmt.where(Location.organization_id == _reference_id(organization, "Organization"))
    if partof:
        stmt = stmt.where(Location.parent_id == _reference_id(partof, "Location"))
    rows, total = _paged(session, stmt, count, offset)
    occupied = _occupied_beds(session)
    return searchset(
        request,
        "Location",
        [translators.location(loc, occupied=loc.id in occupied) for loc in rows],
        total,
        count,
        offset,
    )


@router.get("/Location/{location_id}", responses={200: _RESOURCE}, summary="Read Location")
def read_location(session: DbDep, _: DirectoryReader, location_id: str) -> FhirResponse:
    location = session.get(Location, location_id)
    if location is None:
        raise NotFound(f"no Location/{location_id}")
    return FhirResponse(translators.location(location, occupied=location.id in _occupied_beds(session)))


# --- AuditEvent --------------------------------------------------------------------------------------

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]


def _date_bounds(values: list[str]) -> tuple[datetime | None, datetime | None]:
    since = until = None
    for raw in values:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in {"ge", "gt", "le", "lt", "eq"} else ("eq", raw)
        try:
            moment = datetime.fromisoformat(value if "T" in value else value + "T00:00:00+00:00")
            moment.astimezone(UTC)  # out-of-range values (year 1 minus an offset) fail here
        except (ValueError, OverflowError) as exc:
            raise Invalid(
                f"date must be an ISO date or dateTime with an optional ge/gt/le/lt prefix: {raw}"
            ) from exc
        if moment.tzinfo is None:
            raise Invalid("date with a time needs a time zone, e.g. 2026-11-27T08:00:00+08:00")
        if prefix in {"ge", "gt"}:
            since = moment
        elif prefix in {"le", "lt"}:
            until = moment
        else:
            since = moment
    return since, until


@router.get("/AuditEvent", responses={200: _RESOURCE}, summary="Search AuditEvent (auditors)")
def search_audit_event(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Auditor,
    patient: Annotated[str | None, Query(max_length=50)] = None,
    agent: Annotated[str | None, Query(max_length=64, description="username")] = None,
    date: Annotated[list[str] | None, Query(max_length=2)] = None,
    subtype: Annotated[str | None, Query(max_length=64, description="action prefix, e.g. user.login")] = None,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    since, until = _date_bounds(date or [])
    patient_id = _reference_id(patient, "Patient")
    if patient_id and len(patient_id) > 36:
        raise Invalid("patient must be a Patient id or reference")
    query = audit_service.search(
        patient_id=patient_id, actor_username=agent, action_prefix=subtype, since=since, until=until
    )
    total = audit_service.count(session, query)
    rows = list(session.scalars(query.limit(count).offset(offset)))
    resources = [translators.audit_event(r) for r in rows]
    record_meta_access(
        session,
        kernel.audit,
        principal,
        "audit.fhir_search",
        returned=len(rows),
        **({"patient_id": patient_id} if patient_id else {}),
    )
    session.commit()
    return searchset(request, "AuditEvent", resources, total, count, offset)


@router.get("/AuditEvent/{seq}", responses={200: _RESOURCE}, summary="Read AuditEvent (auditors)")
def read_audit_event(
    kernel: KernelDep, session: DbDep, principal: Auditor, seq: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> FhirResponse:
    record = session.get(AuditRecord, seq)
    if record is None:
        raise NotFound(f"no AuditEvent/{seq}")
    resource = translators.audit_event(record)
    record_meta_access(session, kernel.audit, principal, "audit.fhir_read", seq=seq)
    session.commit()
    return FhirResponse(resource)
