"""Domain records → FHIR R4 resources, each validated with ``fhir.resources`` (R4B models).

FHIR lives only at the edge (as in OpenMRS fhir2): tables stay shaped for the domain, and these
functions are the single place where FHIR's shape is decided.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.encounter import Encounter as FhirEncounter
from fhir.resources.R4B.location import Location as FhirLocation
from fhir.resources.R4B.organization import Organization as FhirOrganization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner as FhirPractitioner

from tianfu.core.audit.models import AuditRecord
from tianfu.core.identity.models import User
from tianfu.core.patients.models import Encounter, Location, Organization, Patient

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ID_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
LOCATION_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
MRN_SYSTEM = "urn:tianfu:mrn:"  # + institution code
ORG_SYSTEM = "urn:tianfu:organization"
LICENCE_SYSTEM = "urn:tianfu:practitioner-licence"  # 医师执业证书编码
RESIDENT_ID_SYSTEM = "urn:tianfu:cn-resident-id"  # 居民身份证号 (GB 11643)
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

ENCOUNTER_CLASS_DISPLAY = {
    "IMP": "inpatient encounter",
    "EMER": "emergency",
    "AMB": "ambulatory",
    "VR": "virtual",
}
PHYSICAL_TYPE = {"ward": ("wa", "Ward"), "room": ("ro", "Room"), "bed": ("bd", "Bed")}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def dump(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def patient(p: Patient, organization_code: str) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [
        {
            "use": "usual",
            "type": {"coding": [{"system": ID_TYPE, "code": "MR", "display": "Medical record number"}]},
            "system": MRN_SYSTEM + organization_code,
            "value": p.mrn,
        }
    ]
    if p.national_id:
        identifiers.append(
            {
                "use": "official",
                "type": {
                    "coding": [
                        {"system": ID_TYPE, "code": "NI", "display": "National unique individual identifier"}
                    ]
                },
                "system": RESIDENT_ID_SYSTEM,
                "value": p.national_id,
            }
        )
    name: dict[str, Any] = {"use": "official", "text": p.name}
    if p.family_name:
        name["family"] = p.family_name
    if p.given_name:
        name["given"] = [p.given_name]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": p.id,
        "meta": {"lastUpdated": _iso(p.updated_at)},
        "identifier": identifiers,
        "active": not p.voided,
        "name": [name],
        "gender": p.gender,
        "managingOrganization": {"reference": f"Organization/{p.managing_organization_id}"},
    }
    if p.birth_date:
        resource["birthDate"] = p.birth_date.isoformat()
    if p.phone:
        resource["telecom"] = [{"system": "phone", "value": p.phone, "use": "mobile"}]
    if p.address:
        resource["address"] = [{"text": p.address, "country": "CN"}]
    return dump(FhirPatient.model_validate(resource))


def encounter(e: Encounter) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": e.id,
        "status": e.status,
        "class": {
            "system": ACT_CODE,
            "code": e.encounter_class,
            "display": ENCOUNTER_CLASS_DISPLAY.get(e.encounter_class),
        },
        "subject": {"reference": f"Patient/{e.patient_id}"},
        "serviceProvider": {"reference": f"Organization/{e.organization_id}"},
        "period": {"start": _iso(e.period_start), **({"end": _iso(e.period_end)} if e.period_end else {})},
    }
    locations = [loc for loc in (e.ward, e.bed) if loc is not None]
    if locations:
        resource["location"] = [
            {
                "location": {"reference": f"Location/{loc.id}", "display": loc.name},
                "status": "active" if e.status == "in-progress" else "completed",
            }
            for loc in locations
        ]
    if e.attending is not None:
        resource["participant"] = [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                                "display": "attender",
                            }
                        ]
                    }
                ],
                "individual": {
                    "reference": f"Practitioner/{e.attending.id}",
                    "display": e.attending.display_name,
                },
            }
        ]
    if e.reason:
        resource["reasonCode"] = [{"text": e.reason}]
    return dump(FhirEncounter.model_validate(resource))


def practitioner(u: User) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": u.id,
        "active": u.is_active,
        "name": [{"text": u.display_name}],
    }
    if u.licence_number:
        resource["identifier"] = [{"system": LICENCE_SYSTEM, "value": u.licence_number}]
    qualification: list[dict[str, Any]] = []
    if u.professional_title:
        qualification.append({"code": {"text": u.professional_title}})
    if u.specialty:
        entry: dict[str, Any] = {"code": {"text": u.specialty}}
        if u.practicing_since:
            entry["period"] = {"start": u.practicing_since.isoformat()}
        qualification.append(entry)
    if qualification:
        resource["qualification"] = qualification
    if u.phone:
        resource["telecom"] = [{"system": "phone", "value": u.phone, "use": "work"}]
    return dump(FhirPractitioner.model_validate(resource))


def organization(o: Organization) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": o.id,
        "active": o.active,
        "identifier": [{"system": ORG_SYSTEM, "value": o.code}],
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": o.name,
    }
    if o.name_en:
        resource["alias"] = [o.name_en]
    if o.phone:
        resource["telecom"] = [{"system": "phone", "value": o.phone}]
    if o.address:
        resource["address"] = [{"text": o.address, "country": "CN"}]
    return dump(FhirOrganization.model_validate(resource))


def location(loc: Location, *, occupied: bool | None = None) -> dict[str, Any]:
    code, display = PHYSICAL_TYPE.get(loc.kind, ("area", "Area"))
    resource: dict[str, Any] = {
        "resourceType": "Location",
        "id": loc.id,
        "identifier": [{"system": f"urn:tianfu:location:{loc.organization_id}", "value": loc.code}],
        "status": "active" if loc.active else "inactive",
        "name": loc.name,
        "mode": "instance",
        "physicalType": {"coding": [{"system": LOCATION_TYPE, "code": code, "display": display}]},
        "managingOrganization": {"reference": f"Organization/{loc.organization_id}"},
    }
    if loc.name_en:
        resource["alias"] = [loc.name_en]
    if loc.parent_id:
        resource["partOf"] = {"reference": f"Location/{loc.parent_id}"}
    if loc.kind == "bed" and occupied is not None:
        resource["operationalStatus"] = {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0116",
            "code": "O" if occupied else "U",
            "display": "Occupied" if occupied else "Unoccupied",
        }
    return dump(FhirLocation.model_validate(resource))


_AUDIT_TYPES = {
    "user.": ("http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication"),
    "access.": ("http://dicom.nema.org/resources/ontology/DCM", "110113", "Security Alert"),
    "audit.": ("http://dicom.nema.org/resources/ontology/DCM", "110101", "Audit Log Used"),
}
_REST = ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation")


def audit_event(r: AuditRecord) -> dict[str, Any]:
    system, code, display = next(
        (v for prefix, v in _AUDIT_TYPES.items() if r.action.startswith(prefix)), _REST
    )
    who: dict[str, Any] = {"display": r.actor_username}
    if r.actor_user_id:
        who["reference"] = f"Practitioner/{r.actor_user_id}" if r.actor_role != "patient" else None
        who = {k: v for k, v in who.items() if v}
    agent: dict[str, Any] = {
        "who": who,
        "requestor": True,
        "role": [{"text": r.actor_role}],
    }
    if r.client_ip:
        agent["network"] = {"address": r.client_ip, "type": "2"}
    if r.purpose:
        agent["purposeOfUse"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": r.purpose}]}]
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{pid}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
                "display": "Person",
            },
            "role": {
                "system": "http://terminology.hl7.org/CodeSystem/object-role",
                "code": "1",
                "display": "Patient",
            },
        }
        for pid in r.patient_ids
    ]
    if r.resource_type and r.resource_id and r.resource_type != "Patient":
        entities.append({"what": {"display": f"{r.resource_type}/{r.resource_id}"}})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(r.seq),
        "type": {"system": system, "code": code, "display": display},
        "subtype": [{"system": "urn:tianfu:audit-action", "code": r.action}],
        "action": r.action_type,
        "recorded": _iso(r.recorded_at),
        "outcome": str(r.outcome),
        "agent": [agent],
        "source": {
            "observer": {"display": "Tianfu"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if r.outcome_desc:
        resource["outcomeDesc"] = r.outcome_desc
    if entities:
        resource["entity"] = entities
    return dump(AuditEvent.model_validate(resource))
