"""FHIR R4 read and search; every resource validates with fhir.resources (R4B models)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from tests.conftest import Demo

Login = Callable[[str], dict[str, str]]
FHIR = "application/fhir+json"


def _bundle(response: object) -> Bundle:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(FHIR)  # type: ignore[attr-defined]
    return Bundle.model_validate(response.json())  # type: ignore[attr-defined]


def test_capability_statement_is_public_and_valid(client: TestClient) -> None:
    response = client.get("/fhir/R4/metadata")
    statement = CapabilityStatement.model_validate(response.json())
    assert statement.fhirVersion == "4.0.1"
    kernel_types = {"Patient", "Encounter", "Practitioner", "Organization", "Location", "AuditEvent"}
    # + monitoring (Observation) and imaging (ImagingStudy, DiagnosticReport)
    assert {r.type for r in statement.rest[0].resource} == kernel_types | {
        "Observation",
        "ImagingStudy",
        "DiagnosticReport",
    }


def test_patient_search_respects_the_care_relationship(client: TestClient, token_for: Login) -> None:
    bundle = _bundle(client.get("/fhir/R4/Patient", headers=token_for("nurse.wang")))
    assert bundle.type == "searchset"
    assert bundle.total == 4
    names = {e.resource.name[0].text for e in bundle.entry}
    assert names == {"李建国", "王秀英", "刘芳", "张德明"}
    patient = bundle.entry[0].resource
    assert patient.identifier[0].type.coding[0].code == "MR"


def test_patient_search_parameters_and_paging(client: TestClient, token_for: Login) -> None:
    headers = token_for("dr.zhang")
    assert _bundle(client.get("/fhir/R4/Patient", params={"name": "王"}, headers=headers)).total == 1
    assert _bundle(client.get("/fhir/R4/Patient", params={"gender": "male"}, headers=headers)).total == 2
    assert (
        _bundle(client.get("/fhir/R4/Patient", params={"birthdate": "1968-06-20"}, headers=headers)).total
        == 1
    )
    assert (
        _bundle(
            client.get(
                "/fhir/R4/Patient", params={"identifier": "urn:tianfu:mrn:TFRM|TFRM-000001"}, headers=headers
            )
        ).total
        == 1
    )
    page = _bundle(client.get("/fhir/R4/Patient", params={"_count": 3, "nonsense": "x"}, headers=headers))
    links = {link.relation: link.url for link in page.link}
    assert len(page.entry) == 3
    assert "_offset=3" in links["next"]
    assert "nonsense" not in links["self"]  # lenient: unknown parameters are ignored and not echoed
    second = _bundle(client.get(links["next"].replace("http://testserver", ""), headers=headers))
    assert len(second.entry) == 1


def test_patient_read_and_errors_are_operation_outcomes(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    headers = token_for("nurse.wang")
    mine = client.get(f"/fhir/R4/Patient/{demo.patient('刘芳').id}", headers=headers)
    assert mine.status_code == 200
    assert mine.json()["resourceType"] == "Patient"
    for path, status in (
        (f"/fhir/R4/Patient/{demo.patient('陈淑华').id}", 403),
        ("/fhir/R4/Patient/nope", 404),
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"].startswith(FHIR)
        outcome = OperationOutcome.model_validate(response.json())
        assert outcome.issue[0].severity == "error"
    unauthenticated = client.get("/fhir/R4/Patient")
    assert unauthenticated.status_code == 401
    assert OperationOutcome.model_validate(unauthenticated.json()).issue[0].code == "login"
    invalid = client.get("/fhir/R4/Patient", params={"_count": 0}, headers=headers)
    assert invalid.status_code == 422
    assert OperationOutcome.model_validate(invalid.json()).issue[0].code == "invalid"


def test_encounter_search_and_read(client: TestClient, token_for: Login, demo: Demo) -> None:
    headers = token_for("dr.zhang")
    patient_id = demo.patient("李建国").id
    bundle = _bundle(
        client.get("/fhir/R4/Encounter", params={"patient": f"Patient/{patient_id}"}, headers=headers)
    )
    assert bundle.total == 2
    statuses = sorted(e.resource.status for e in bundle.entry)
    assert statuses == ["finished", "in-progress"]
    current = next(e.resource for e in bundle.entry if e.resource.status == "in-progress")
    assert current.class_fhir.code == "IMP"
    assert current.participant[0].individual.display == "张伟"
    assert (
        _bundle(client.get("/fhir/R4/Encounter", params={"status": "in-progress"}, headers=headers)).total
        == 4
    )
    read = client.get(f"/fhir/R4/Encounter/{current.id}", headers=headers)
    assert read.json()["subject"]["reference"] == f"Patient/{patient_id}"
    by_id = _bundle(client.get("/fhir/R4/Encounter", params={"_id": current.id}, headers=headers))
    assert by_id.total == 1


@pytest.mark.parametrize(
    ("resource", "expected"), [("Practitioner", 12), ("Organization", 2), ("Location", 47)]
)
def test_directory_resources(client: TestClient, token_for: Login, resource: str, expected: int) -> None:
    bundle = _bundle(
        client.get(f"/fhir/R4/{resource}", params={"_count": 200}, headers=token_for("nurse.wang"))
    )
    assert bundle.total == expected
    first = bundle.entry[0].resource
    read = client.get(f"/fhir/R4/{resource}/{first.id}", headers=token_for("nurse.wang"))
    assert read.status_code == 200
    assert read.json()["id"] == first.id


def test_bed_locations_say_whether_they_are_occupied(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    headers = token_for("nurse.wang")
    occupied = client.get(f"/fhir/R4/Location/{demo.bed('CARD1-01').id}", headers=headers).json()
    free = client.get(f"/fhir/R4/Location/{demo.bed('CARD1-03').id}", headers=headers).json()
    assert (occupied["operationalStatus"]["code"], free["operationalStatus"]["code"]) == ("O", "U")
    assert occupied["partOf"]["reference"] == f"Location/{demo.ward('CARD1').id}"
    beds = _bundle(
        client.get("/fhir/R4/Location", params={"partof": f"Location/{demo.ward('ICU').id}"}, headers=headers)
    )
    assert beds.total == 6


def test_audit_events_for_auditors_only(client: TestClient, token_for: Login, demo: Demo) -> None:
    patient_id = demo.patient("刘芳").id
    client.get(f"/fhir/R4/Patient/{patient_id}", headers=token_for("nurse.wang"))
    auditor = token_for("auditor")
    bundle = _bundle(client.get("/fhir/R4/AuditEvent", params={"patient": patient_id}, headers=auditor))
    event = bundle.entry[0].resource
    assert event.action == "R"
    assert event.entity[0].what.reference == f"Patient/{patient_id}"
    assert event.agent[0].purposeOfUse[0].coding[0].code == "TREAT"
    dated = _bundle(
        client.get(
            "/fhir/R4/AuditEvent", params={"date": "ge2020-01-01", "agent": "nurse.wang"}, headers=auditor
        )
    )
    assert dated.total >= 1
    assert client.get("/fhir/R4/AuditEvent", params={"date": "yesterday"}, headers=auditor).status_code == 422
    assert client.get(f"/fhir/R4/AuditEvent/{event.id}", headers=auditor).status_code == 200
    assert client.get("/fhir/R4/AuditEvent", headers=token_for("nurse.wang")).status_code == 403
    assert client.get("/fhir/R4/Patient", headers=auditor).status_code == 403
