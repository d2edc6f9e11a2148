"""API shapes of the patient record."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, model_validator

from tianfu.core.http.schemas import IsoDate, RequestModel, ResponseModel
from tianfu.core.patients.models import Encounter, Location, Patient
from tianfu.core.patients.service import current_encounter, mask_national_id

Gender = Literal["male", "female", "other", "unknown"]
EncounterClass = Literal["IMP", "EMER", "AMB", "VR"]


class LocationRef(ResponseModel):
    id: str
    code: str
    name: str


class LocationOut(LocationRef):
    organization_id: str
    parent_id: str | None
    kind: str
    name_en: str
    specialty: str
    active: bool


class OrganizationOut(ResponseModel):
    id: str
    code: str
    name: str
    name_en: str
    level: str
    address: str
    phone: str
    active: bool


class PractitionerOut(ResponseModel):
    id: str
    username: str
    display_name: str
    role: str
    organization_id: str | None
    professional_title: str
    specialty: str
    licence_number: str
    practicing_since: date | None


class PersonRef(ResponseModel):
    id: str
    display_name: str


class EncounterOut(ResponseModel):
    id: str
    patient_id: str
    organization_id: str
    encounter_class: str
    status: str
    ward: LocationRef | None
    bed: LocationRef | None
    attending: PersonRef | None
    reason: str
    period_start: datetime
    period_end: datetime | None


class PatientOut(ResponseModel):
    id: str
    mrn: str
    managing_organization_id: str
    name: str
    family_name: str
    given_name: str
    gender: str
    birth_date: date | None
    national_id_masked: str
    phone: str
    address: str
    current_encounter: EncounterOut | None

    @classmethod
    def of(cls, patient: Patient) -> PatientOut:
        encounter = current_encounter(patient)
        return cls(
            id=patient.id,
            mrn=patient.mrn,
            managing_organization_id=patient.managing_organization_id,
            name=patient.name,
            family_name=patient.family_name,
            given_name=patient.given_name,
            gender=patient.gender,
            birth_date=patient.birth_date,
            national_id_masked=mask_national_id(patient.national_id) if patient.national_id else "",
            phone=patient.phone,
            address=patient.address,
            current_encounter=EncounterOut.model_validate(encounter) if encounter else None,
        )


class PatientCreate(RequestModel):
    name: str = Field(min_length=1, max_length=100, description="Full name as written, e.g. 张伟")
    gender: Gender
    mrn: str | None = Field(None, max_length=64, description="病案号; assigned when omitted")
    family_name: str = Field("", max_length=50)
    given_name: str = Field("", max_length=50)
    birth_date: IsoDate | None = None
    national_id: str = Field("", max_length=18, description="居民身份证号 (18 characters)")
    phone: str = Field("", max_length=40)
    address: str = Field("", max_length=300)


class PatientUpdate(RequestModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    gender: Gender | None = None
    family_name: str | None = Field(None, max_length=50)
    given_name: str | None = Field(None, max_length=50)
    birth_date: IsoDate | None = None
    national_id: str | None = Field(None, max_length=18)
    phone: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=300)

    @model_validator(mode="after")
    def _only_birth_date_may_be_cleared(self) -> PatientUpdate:
        cleared = [
            name for name in self.model_fields_set if getattr(self, name) is None and name != "birth_date"
        ]
        if cleared:
            raise ValueError(f"{', '.join(sorted(cleared))} cannot be empty (null)")
        return self


class AdmitRequest(RequestModel):
    ward_id: str = Field(max_length=36)
    bed_id: str | None = Field(None, max_length=36)
    attending_id: str | None = Field(None, max_length=36)
    encounter_class: EncounterClass = "IMP"
    reason: str = Field("", max_length=2000)


class TransferRequest(RequestModel):
    ward_id: str = Field(max_length=36)
    bed_id: str | None = Field(None, max_length=36)


class BreakGlassRequest(RequestModel):
    reason: str = Field(
        min_length=10, max_length=500, description="The emergency, in words an auditor can review"
    )


class GrantOut(ResponseModel):
    id: str
    patient_id: str
    kind: str
    reason: str
    starts_at: datetime
    expires_at: datetime | None


class WardCensusOut(ResponseModel):
    ward: LocationRef
    beds: int
    occupied: int


def location_ref(location: Location | None) -> LocationRef | None:
    return LocationRef.model_validate(location) if location else None


def encounter_out(encounter: Encounter) -> EncounterOut:
    return EncounterOut.model_validate(encounter)
