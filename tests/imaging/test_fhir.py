"""Imaging at the FHIR edge: ImagingStudy and the AI's DiagnosticReport; validated, checked, audited."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy as FhirImagingStudy
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.imaging.test_api import stow
from tests.imaging.test_store import make_instance
from tianfu.core.audit.models import AuditRecord
from tianfu.core.db import utcnow
from tianfu.core.http.deps import Requirement
from tianfu.imaging import fhir as imaging_fhir
from tianfu.imaging.findings import ImagingFinding
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

Login = Callable[[str], dict[str, str]]
FHIR = "/fhir/R4"


@pytest.fixture
def app_client(client: TestClient) -> TestClient:
    """The app with imaging's FHIR routes, whether or not the module mounts them yet."""
    paths = {getattr(r, "path", "") for r in client.app.routes}  # type: ignore[attr-defined]
    if f"{FHIR}/ImagingStudy/{{study_id}}" not in paths:
        client.app.include_router(imaging_fhir.fhir)  # type: ignore[attr-defined]
    return client


def stored_study(client: TestClient, token_for: Login, db: Session, demo: Demo) -> ImagingStudy:
    patient = demo.patient("杨志强")
    # A body part no model reads, so the findings are only the ones the test adds, whatever models exist.
    data = make_instance("cxr_jpeg_baseline.dcm", patient_id=patient.mrn, BodyPartExamined="SKULL")
    answer = stow(client, token_for("dr.chen"), data)
    assert answer.status_code == 200, answer.text
    study = db.scalars(select(ImagingStudy).where(ImagingStudy.patient_id == patient.id)).one()
    db.commit()
    return study


def add_findings(db: Session, study: ImagingStudy, *, reviewed: bool = False) -> None:
    instance = db.scalars(
        select(ImagingInstance).join(ImagingSeries).where(ImagingSeries.study_id == study.id)
    ).first()
    assert instance is not None
    common = {"study_id": study.id, "instance_id": instance.id, "model_version": "1.3.0", "probabilities": {}}
    db.add(
        ImagingFinding(
            task="pneumonia",
            label="pneumonia",
            probability=0.87,
            score=0.87,
            threshold=0.62,
            positive=True,
            **common,
            **(
                {"review": "confirmed", "reviewed_label": "pneumonia", "reviewed_at": utcnow()}
                if reviewed
                else {}
            ),
        )
    )
    db.add(
        ImagingFinding(
            task="cxr-abnormal",
            label="normal",
            probability=0.2,
            score=0.2,
            threshold=0.5,
            positive=False,
            **common,
        )
    )
    db.commit()


def test_imaging_study_read_and_search(
    app_client: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    study = stored_study(app_client, token_for, db, demo)
    doctor = token_for("dr.chen")
    answer = app_client.get(f"{FHIR}/ImagingStudy/{study.id}", headers=doctor)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    resource = answer.json()
    FhirImagingStudy.model_validate(resource)
    assert resource["status"] == "available"
    assert resource["subject"] == {"reference": f"Patient/{study.patient_id}"}
    assert resource["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{study.study_instance_uid}",
    }
    assert resource["numberOfSeries"] == 1
    assert resource["numberOfInstances"] == 1
    series = resource["series"][0]
    assert series["bodySite"]["display"] == "SKULL"
    assert series["instance"][0]["sopClass"]["code"].startswith("urn:oid:1.2.840.10008.")
    endpoint = resource["contained"][0]
    assert resource["endpoint"] == [{"reference": "#dicomweb"}]
    assert endpoint["address"] == "http://testserver/api/v1/imaging/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"

    found = app_client.get(
        f"{FHIR}/ImagingStudy", params={"patient": f"Patient/{study.patient_id}"}, headers=doctor
    )
    assert found.status_code == 200, found.text
    bundle = found.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == study.id
    assert "patient=Patient" in bundle["link"][0]["url"]

    actions = set(db.scalars(select(AuditRecord.action).where(AuditRecord.action.like("imaging.fhir%"))))
    db.commit()
    assert {"imaging.fhir_read", "imaging.fhir_search"} <= actions


def test_the_ai_report_is_preliminary_with_one_observation_per_finding(
    app_client: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    study = stored_study(app_client, token_for, db, demo)
    doctor = token_for("dr.chen")
    missing = app_client.get(f"{FHIR}/DiagnosticReport/ai-{study.id}", headers=doctor)
    assert missing.status_code == 404  # the AI has not read it
    assert missing.json()["resourceType"] == "OperationOutcome"
    add_findings(db, study, reviewed=True)

    answer = app_client.get(f"{FHIR}/DiagnosticReport/ai-{study.id}", headers=doctor)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    DiagnosticReport.model_validate(report)
    assert report["id"] == f"ai-{study.id}"
    assert report["status"] == "preliminary"  # even when reviewed: the AI's suggestion is not a signed report
    assert report["code"]["text"] == imaging_fhir.REPORT_CODE_TEXT
    assert report["subject"] == {"reference": f"Patient/{study.patient_id}"}
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study.id}"}]
    observations = {r["id"]: r for r in report["contained"] if r["resourceType"] == "Observation"}
    assert [r["reference"].lstrip("#") for r in report["result"]] == list(observations)
    by_task = {o["code"]["text"]: o for o in observations.values()}
    pneumonia = by_task["pneumonia, AI probability"]
    assert pneumonia["status"] == "preliminary"
    assert pneumonia["valueQuantity"]["value"] == 0.87
    assert pneumonia["interpretation"][0]["coding"][0]["code"] == "POS"
    assert pneumonia["method"]["text"] == "tianfu imaging-pneumonia 1.3.0, threshold 0.62"
    assert "confirmed by a radiologist" in pneumonia["note"][0]["text"]
    device = next(r for r in report["contained"] if r["id"] == pneumonia["device"]["reference"][1:])
    assert device["resourceType"] == "Device"
    assert device["version"][0]["value"] == "1.3.0"
    assert by_task["cxr-abnormal, AI probability"]["interpretation"][0]["coding"][0]["code"] == "NEG"
    assert "阳性" in report["conclusion"]
    assert (
        "pneumonia positive (score 0.87, threshold 0.62, confirmed by a radiologist)" in report["conclusion"]
    )

    found = app_client.get(f"{FHIR}/DiagnosticReport", params={"patient": study.patient_id}, headers=doctor)
    assert found.status_code == 200, found.text
    bundle = found.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [f"ai-{study.id}"]
    assert app_client.get(f"{FHIR}/DiagnosticReport/{study.id}", headers=doctor).status_code == 404


def test_a_patient_outside_the_callers_care_is_refused(
    app_client: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    study = stored_study(app_client, token_for, db, demo)  # respiratory ward: not nurse Wang's
    add_findings(db, study)
    nurse = token_for("nurse.wang")
    for path, params in (
        (f"{FHIR}/ImagingStudy/{study.id}", {}),
        (f"{FHIR}/DiagnosticReport/ai-{study.id}", {}),
        (f"{FHIR}/ImagingStudy", {"patient": str(study.patient_id)}),
        (f"{FHIR}/DiagnosticReport", {"patient": str(study.patient_id)}),
    ):
        refused = app_client.get(path, params=params, headers=nurse)
        assert refused.status_code == 403, path
        assert refused.json()["resourceType"] == "OperationOutcome"
    assert app_client.get(f"{FHIR}/ImagingStudy/{study.id}").status_code == 401


def test_search_parameters_are_in_the_capability_statement(app_client: TestClient) -> None:
    statement = app_client.get(f"{FHIR}/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for kind in ("ImagingStudy", "DiagnosticReport"):
        assert [p["name"] for p in resources[kind]["searchParam"]] == ["patient"]
        assert resources[kind]["searchParam"][0]["type"] == "reference"


def test_every_imaging_fhir_route_has_exactly_one_access_rule() -> None:
    routes = [r for r in imaging_fhir.fhir.routes if isinstance(r, APIRoute)]
    assert len(routes) == 4
    for route in routes:
        found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Requirement)]
        assert len(found) == 1, route.path
