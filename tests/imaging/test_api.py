"""The imaging module through the whole app: a radiograph arrives, the AI reads it, the worklist puts it
first, the radiologist reviews it in the viewer; access and audit on the way."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.imaging.test_store import make_instance
from tianfu.core.model_outputs.models import ModelFeedback, ModelOutput
from tianfu.imaging import inference
from tianfu.imaging.findings import ImagingFinding, priority, tasks_for

Login = Callable[[str], dict[str, str]]
API = "/api/v1/imaging"
BOUNDARY = "tianfu-api-test"


def stow(client: TestClient, headers: dict[str, str], data: bytes) -> Any:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return client.post(
        f"{API}/dicomweb/studies",
        content=body,
        headers=headers | {"Content-Type": content_type, "Accept": "application/dicom+json"},
    )


def wait_for_findings(db: Session, study_id: str, timeout: float = 30.0) -> list[ImagingFinding]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(db.scalars(select(ImagingFinding).where(ImagingFinding.study_id == study_id)))
        db.commit()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the AI did not read the study in time")


def test_which_model_reads_which_image() -> None:
    available = ["pneumonia", "cxr-abnormal", "breast", "retina"]
    assert tasks_for("CR", "CHEST", available) == ["pneumonia"]
    assert tasks_for("DX", "", available) == ["pneumonia"]
    assert tasks_for("CT", "CHEST", available) == []
    assert tasks_for("US", "BREAST", available) == ["breast"]
    assert tasks_for("OP", "", available) == ["retina"]
    assert tasks_for("CR", "CHEST", ["breast"]) == []


def test_positive_findings_rank_above_every_negative_one() -> None:
    assert priority([(True, 0.3)]) > priority([(False, 0.99)])
    assert priority([(True, 0.9)]) > priority([(True, 0.3), (False, 0.99)])
    assert priority([]) == 0.0


@pytest.mark.skipif(not inference.tasks(), reason="no imaging model shipped")
def test_a_radiograph_is_read_ranked_viewed_and_reviewed(
    client: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    patient = demo.patient("杨志强")  # admitted at the institution, so the radiologist reads his images
    data = make_instance("cxr_jpeg_baseline.dcm", patient_id=patient.mrn, BodyPartExamined="CHEST")
    stored = stow(client, token_for("dr.chen"), data)
    assert stored.status_code == 200, stored.text
    study = client.get(f"{API}/worklist", headers=token_for("dr.chen")).json()[0]
    assert study["patient_id"] == patient.id
    findings = wait_for_findings(db, study["id"])
    assert {f.task for f in findings} <= {"cxr-abnormal", "pneumonia"}
    for finding in findings:
        output = db.get(ModelOutput, finding.ai_output_id)
        assert output is not None
        assert output.module == "imaging"
        assert output.patient_id == patient.id
    db.commit()

    doctor = token_for("rad.liu")
    detail = client.get(f"{API}/studies/{study['id']}", headers=doctor).json()
    assert detail["status"] == "analysed"
    assert detail["ai_priority"] > 0
    first = detail["findings"][0]
    heatmap = client.get(f"{API}/findings/{first['id']}/heatmap.png", headers=doctor)
    assert heatmap.status_code == 200
    assert heatmap.content[:8] == b"\x89PNG\r\n\x1a\n"
    page = client.get(f"/imaging/studies/{study['id']}", headers=doctor)
    assert page.status_code == 200
    assert "heatmap.png" in page.text
    assert client.get("/imaging", headers=doctor).status_code == 200

    review = client.post(
        f"{API}/findings/{first['id']}/review",
        json={"verdict": "corrected", "corrected_label": "normal", "comment": "旧病灶，非急性"},
        headers=doctor,
    )
    assert review.status_code == 200, review.text
    assert review.json()["review"] == "corrected"
    feedback = db.scalars(
        select(ModelFeedback).where(ModelFeedback.output_id == first_output(db, first["id"]))
    ).one()
    assert feedback.verdict == "disagree"
    db.commit()
    again = client.post(f"{API}/findings/{first['id']}/review", json={"verdict": "confirmed"}, headers=doctor)
    assert again.status_code == 409


def first_output(db: Session, finding_id: str) -> str:
    finding = db.get(ImagingFinding, finding_id)
    assert finding is not None
    assert finding.ai_output_id is not None
    return finding.ai_output_id


def test_a_study_outside_the_callers_care_is_refused(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    patient = demo.patient("杨志强")  # respiratory ward: not nurse Wang's
    stored = stow(client, token_for("dr.chen"), make_instance("CT_small.dcm", patient_id=patient.mrn))
    assert stored.status_code == 200, stored.text
    study = client.get(f"{API}/worklist", headers=token_for("dr.chen")).json()[0]
    refused = client.get(f"{API}/studies/{study['id']}", headers=token_for("nurse.wang"))
    assert refused.status_code == 403
    assert study["id"] not in [
        s["id"] for s in client.get(f"{API}/worklist", headers=token_for("nurse.wang")).json()
    ]


def test_upload_page_refuses_a_non_dicom_file(client: TestClient, token_for: Login) -> None:
    response = client.post(
        "/imaging/upload",
        files={"file": ("notes.txt", b"not a dicom file", "text/plain")},
        headers=token_for("dr.chen"),
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
