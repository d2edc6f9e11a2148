"""/api/v1: patients, encounters, and the directory of institutions, wards, beds and staff."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from tianfu.core.errors import NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDate, Page
from tianfu.core.identity.models import User
from tianfu.core.patients import service
from tianfu.core.patients.models import Location, Organization
from tianfu.core.patients.schemas import (
    AdmitRequest,
    BreakGlassRequest,
    EncounterOut,
    GrantOut,
    LocationOut,
    OrganizationOut,
    PatientCreate,
    PatientOut,
    PatientUpdate,
    PractitionerOut,
    TransferRequest,
    WardCensusOut,
    encounter_out,
)
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.PATIENT_READ))]
Registrar = Annotated[Principal, Depends(require(Permission.PATIENT_WRITE))]
AdtClerk = Annotated[Principal, Depends(require(Permission.ENCOUNTER_WRITE))]
DirectoryReader = Annotated[Principal, Depends(require(Permission.DIRECTORY_READ))]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("/patients", tags=["patients"], summary="Search the patients you care for")
def search_patients(
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    q: Annotated[str, Query(max_length=100, description="Name, MRN or phone fragment")] = "",
    ward_id: Annotated[str | None, Query(max_length=36)] = None,
    admitted: bool = False,
    gender: Annotated[str | None, Query(pattern="^(male|female|other|unknown)$")] = None,
    birth_date: IsoDate | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[PatientOut]:
    query = service.PatientQuery(
        text=q,
        ward_id=ward_id,
        admitted_only=admitted,
        gender=gender,
        birth_date=birth_date,
        limit=limit,
        offset=offset,
    )
    rows, total = service.search_patients(session, kernel.audit, principal, query)
    session.commit()
    return Page(items=[PatientOut.of(p) for p in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/patients", tags=["patients"], status_code=status.HTTP_201_CREATED, summary="Register a patient"
)
def register_patient(
    kernel: KernelDep, session: DbDep, principal: Registrar, body: PatientCreate
) -> PatientOut:
    patient = service.register_patient(
        session, kernel.audit, principal, service.PatientFields(**body.model_dump())
    )
    session.commit()
    return PatientOut.of(patient)


@router.get("/patients/{patient_id}", tags=["patients"], summary="Read one patient")
def read_patient(kernel: KernelDep, session: DbDep, principal: Reader, patient_id: str) -> PatientOut:
    patient = service.read_patient(session, kernel.audit, principal, patient_id)
    session.commit()
    return PatientOut.of(patient)


@router.patch("/patients/{patient_id}", tags=["patients"], summary="Correct demographics")
def update_patient(
    kernel: KernelDep, session: DbDep, principal: Registrar, patient_id: str, body: PatientUpdate
) -> PatientOut:
    patient = service.update_patient(
        session, kernel.audit, principal, patient_id, body.model_dump(exclude_unset=True)
    )
    session.commit()
    return PatientOut.of(patient)


@router.get("/patients/{patient_id}/encounters", tags=["encounters"], summary="A patient's encounters")
def patient_encounters(
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    patient_id: str,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[EncounterOut]:
    service.require_access(session, kernel.audit, principal, patient_id, action="encounter.search")
    rows, total = service.list_encounters(
        session, kernel.audit, principal, patient_id=patient_id, limit=limit, offset=offset
    )
    session.commit()
    return Page(items=[encounter_out(e) for e in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/patients/{patient_id}/encounters",
    tags=["encounters"],
    status_code=status.HTTP_201_CREATED,
    summary="Admit a patient to a ward (and bed)",
)
def admit(
    kernel: KernelDep, session: DbDep, principal: AdtClerk, patient_id: str, body: AdmitRequest
) -> EncounterOut:
    encounter = service.admit(
        session,
        kernel.audit,
        principal,
        patient_id,
        ward_id=body.ward_id,
        bed_id=body.bed_id,
        attending_id=body.attending_id,
        encounter_class=body.encounter_class,
        reason=body.reason,
    )
    session.commit()
    return encounter_out(encounter)


@router.get("/encounters/{encounter_id}", tags=["encounters"], summary="Read one encounter")
def read_encounter(kernel: KernelDep, session: DbDep, principal: Reader, encounter_id: str) -> EncounterOut:
    encounter = service.read_encounter(session, kernel.audit, principal, encounter_id)
    session.commit()
    return encounter_out(encounter)


@router.post(
    "/encounters/{encounter_id}/transfer", tags=["encounters"], summary="Move to another ward or bed"
)
def transfer(
    kernel: KernelDep, session: DbDep, principal: AdtClerk, encounter_id: str, body: TransferRequest
) -> EncounterOut:
    encounter = service.transfer(
        session, kernel.audit, principal, encounter_id, ward_id=body.ward_id, bed_id=body.bed_id
    )
    session.commit()
    return encounter_out(encounter)


@router.post("/encounters/{encounter_id}/discharge", tags=["encounters"], summary="Discharge")
def discharge(kernel: KernelDep, session: DbDep, principal: AdtClerk, encounter_id: str) -> EncounterOut:
    encounter = service.discharge(session, kernel.audit, principal, encounter_id)
    session.commit()
    return encounter_out(encounter)


@router.post(
    "/patients/{patient_id}/break-glass",
    tags=["patients"],
    status_code=status.HTTP_201_CREATED,
    summary="Emergency access to a patient outside your care relationship (audited, reviewed)",
)
def break_glass(
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.BREAK_GLASS))],
    patient_id: str,
    body: BreakGlassRequest,
) -> GrantOut:
    grant = service.break_glass(
        session,
        kernel.audit,
        principal,
        patient_id,
        reason=body.reason,
        minutes=kernel.settings.break_glass_minutes,
    )
    session.commit()
    return GrantOut.model_validate(grant)


# --- directory ---------------------------------------------------------------------------------------


@router.get("/organizations", tags=["directory"], summary="Institutions of the network")
def list_organizations(session: DbDep, _: DirectoryReader) -> list[OrganizationOut]:
    return [OrganizationOut.model_validate(o) for o in service.organizations(session)]


@router.get("/organizations/{organization_id}", tags=["directory"], summary="One institution")
def read_organization(session: DbDep, _: DirectoryReader, organization_id: str) -> OrganizationOut:
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(f"no organization {organization_id}")
    return OrganizationOut.model_validate(organization)


@router.get("/locations", tags=["directory"], summary="Wards, rooms and beds")
def list_locations(
    session: DbDep,
    _: DirectoryReader,
    organization_id: Annotated[str | None, Query(max_length=36)] = None,
    kind: Annotated[str | None, Query(pattern="^(ward|room|bed)$")] = None,
    parent_id: Annotated[str | None, Query(max_length=36)] = None,
) -> list[LocationOut]:
    rows = service.locations(session, organization_id=organization_id, kind=kind, parent_id=parent_id)
    return [LocationOut.model_validate(loc) for loc in rows]


@router.get("/locations/{location_id}", tags=["directory"], summary="One ward, room or bed")
def read_location(session: DbDep, _: DirectoryReader, location_id: str) -> LocationOut:
    location = session.get(Location, location_id)
    if location is None:
        raise NotFound(f"no location {location_id}")
    return LocationOut.model_validate(location)


@router.get("/wards/census", tags=["directory"], summary="Beds and occupancy per ward of your institution")
def ward_census(session: DbDep, principal: DirectoryReader) -> list[WardCensusOut]:
    return [WardCensusOut.model_validate(c) for c in service.ward_census(session, principal.organization_id)]


@router.get("/practitioners", tags=["directory"], summary="Staff directory")
def list_practitioners(
    session: DbDep,
    _: DirectoryReader,
    organization_id: Annotated[str | None, Query(max_length=36)] = None,
    role: Annotated[
        str | None, Query(pattern="^(nurse|physician|radiologist|consultant|admin|auditor)$")
    ] = None,
) -> list[PractitionerOut]:
    return [
        PractitionerOut.model_validate(u)
        for u in service.staff(session, organization_id=organization_id, role=role)
    ]


@router.get("/practitioners/{user_id}", tags=["directory"], summary="One staff member")
def read_practitioner(session: DbDep, _: DirectoryReader, user_id: str) -> PractitionerOut:
    user = session.get(User, user_id)
    if user is None or user.role == "patient":
        raise NotFound(f"no practitioner {user_id}")
    return PractitionerOut.model_validate(user)
