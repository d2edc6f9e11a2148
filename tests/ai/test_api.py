"""The AI platform's API end to end: registry, audited switches, local validation, inference, field data."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.models import AuditRecord
from tianfu.core.model_outputs.models import ModelOutput

FIXTURES = Path(__file__).parent / "fixtures"
PNEUMONIA = "tianfu-imaging-pneumonia"


def _png(npz: Path) -> str:
    with np.load(npz) as data:
        image = data["val_images"][0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_registry_lists_every_shipped_model_for_readers_only(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    models = client.get("/api/v1/ai/models", headers=token_for("admin")).json()
    names = {m["name"] for m in models}
    assert {PNEUMONIA, "tianfu-imaging-breast", "tianfu-imaging-retina", "sepsis"} <= names
    pneumonia = next(m for m in models if m["name"] == PNEUMONIA)
    assert pneumonia["active"] is True
    assert len(pneumonia["sha256"]) == 64
    assert pneumonia["metrics"]["auc"] > 0.9
    assert "not for clinical use" in pneumonia["intended_use"]
    assert client.get("/api/v1/ai/models", headers=token_for("patient.liu")).status_code == 403


def test_switching_a_model_off_stops_inference_and_is_audited(
    client: TestClient,
    token_for,  # type: ignore[no-untyped-def]
    db: Session,
) -> None:
    admin = token_for("admin")
    body = {"image": _png(FIXTURES / "pneumonia_val40.npz")}
    answered = client.post("/api/v1/ai/infer/imaging-pneumonia", json=body, headers=token_for("dr.zhang"))
    assert answered.status_code == 200, answered.text
    out = answered.json()
    assert out["status"] == "preliminary"
    assert out["model_version"] == "1.0.0"
    assert out["explanation"]  # the heatmap travels with the answer
    assert out["limits"]
    assert "not a diagnosis" in out["safety_note"]
    recorded = db.get(ModelOutput, out["output_id"])
    assert recorded is not None
    assert (recorded.model_name, recorded.task) == (PNEUMONIA, "imaging-pneumonia")
    db.commit()

    assert (
        client.post(
            f"/api/v1/ai/models/{PNEUMONIA}/deactivate", json={"reason": "x"}, headers=admin
        ).status_code
        == 422
    )
    assert (
        client.post(
            f"/api/v1/ai/models/{PNEUMONIA}/deactivate",
            json={"reason": "under review"},
            headers=token_for("dr.zhang"),
        ).status_code
        == 403
    )
    off = client.post(
        f"/api/v1/ai/models/{PNEUMONIA}/deactivate", json={"reason": "under review"}, headers=admin
    )
    assert off.json()["active_version"] is None
    refused = client.post("/api/v1/ai/infer/imaging-pneumonia", json=body, headers=token_for("dr.zhang"))
    assert refused.status_code == 422
    assert "switched off" in refused.json()["detail"]

    on = client.post(
        f"/api/v1/ai/models/{PNEUMONIA}/versions/1.0.0/activate",
        json={"reason": "review done"},
        headers=admin,
    )
    assert on.json()["active_version"] == "1.0.0"
    actions = db.scalars(
        select(AuditRecord.action).where(AuditRecord.action.like("ai_model.%")).order_by(AuditRecord.seq)
    ).all()
    assert actions == ["ai_model.deactivate", "ai_model.activate"]


def test_bad_inference_input_is_a_problem_not_a_crash(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    headers = token_for("dr.zhang")
    not_image = base64.b64encode(b"this is not an image").decode()
    response = client.post("/api/v1/ai/infer/imaging-pneumonia", json={"image": not_image}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.post("/api/v1/ai/infer/no-such-task", json={}, headers=headers).status_code == 404


def _wait(client: TestClient, run_id: str, headers: dict[str, str]) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/ai/validations/{run_id}", headers=headers).json()
        if run["status"] in ("done", "failed"):
            return run  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError("validation did not finish")


def test_local_validation_reports_metrics_with_intervals(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    admin = token_for("admin")
    with (FIXTURES / "pneumonia_val40.npz").open("rb") as fh:
        started = client.post(
            "/api/v1/ai/validations",
            data={"model": PNEUMONIA},
            files={"file": ("pneumonia_val40.npz", fh, "application/octet-stream")},
            headers=admin,
        )
    assert started.status_code == 202, started.text
    run = _wait(client, started.json()["id"], admin)
    assert run["status"] == "done", run["error"]
    assert run["summary"]["n"] == 40
    auc = next(m for m in run["summary"]["metrics"] if m["name"] == "auc")
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert auc["card_value"] is not None
    html = client.get(f"/api/v1/ai/validations/{run['id']}/report.html", headers=admin)
    assert "data:image/png;base64," in html.text
    assert "default-src 'none'" in html.headers["content-security-policy"]
    pdf = client.get(f"/api/v1/ai/validations/{run['id']}/report.pdf", headers=admin)
    assert pdf.content.startswith(b"%PDF")


def test_a_dataset_in_the_wrong_format_fails_the_run_with_its_reason(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    admin = token_for("admin")
    started = client.post(
        "/api/v1/ai/validations",
        data={"model": PNEUMONIA},
        files={"file": ("labels.csv", b"id,label\n1,0\n", "text/csv")},
        headers=admin,
    )
    run = _wait(client, started.json()["id"], admin)
    assert run["status"] == "failed"
    assert run["error"]
    assert client.get(f"/api/v1/ai/validations/{run['id']}/report.pdf", headers=admin).status_code == 404


def test_field_performance_counts_outputs_and_feedback(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    doctor = token_for("dr.zhang")
    body = {"image": _png(FIXTURES / "pneumonia_val40.npz")}
    output_id = client.post("/api/v1/ai/infer/imaging-pneumonia", json=body, headers=doctor).json()[
        "output_id"
    ]
    field = client.get(f"/api/v1/ai/models/{PNEUMONIA}/field", headers=token_for("auditor")).json()
    assert field["summary"]["outputs"] >= 1
    assert field["summary"]["reviewed"] == 0
    assert {d["name"] for d in field["summary"]["drift"]}  # the model declares inputs to watch
    assert field["thresholds"]["agreement_alert_below"] == 0.8
    del output_id


def test_a_model_shipped_switched_off_answers_only_after_an_admin_activates_it(
    client: TestClient,
    token_for,  # type: ignore[no-untyped-def]
) -> None:
    name = "tianfu-imaging-cxr-abnormal"
    model = client.get(f"/api/v1/ai/models/{name}", headers=token_for("admin")).json()
    assert model["active_version"] is None  # too weak to run before local validation
    body = {"image": _png(FIXTURES / "cxr-abnormal_val20.npz")}
    assert (
        client.post(
            "/api/v1/ai/infer/imaging-cxr-abnormal", json=body, headers=token_for("dr.zhang")
        ).status_code
        == 422
    )
    client.post(
        f"/api/v1/ai/models/{name}/versions/1.0.0/activate",
        json={"reason": "validated on our own films"},
        headers=token_for("admin"),
    ).raise_for_status()
    assert (
        client.post(
            "/api/v1/ai/infer/imaging-cxr-abnormal", json=body, headers=token_for("dr.zhang")
        ).status_code
        == 200
    )


def test_nonsense_requests_are_problems_and_a_patient_reference_is_kept_only_as_a_hash(
    client: TestClient,
    token_for,  # type: ignore[no-untyped-def]
    db: Session,
) -> None:
    doctor = token_for("dr.zhang")
    blank = client.post("/api/v1/ai/infer/triage-departments", json={"complaint": "   "}, headers=doctor)
    assert blank.status_code == 422
    no_vitals = client.post("/api/v1/ai/infer/monitoring-sepsis", json={"rows": [{}]}, headers=doctor)
    assert no_vitals.status_code == 422
    answered = client.post(
        "/api/v1/ai/infer/triage-departments",
        json={"complaint": "发烧咳嗽三天", "patient_ref": "EMR-4711"},
        headers=doctor,
    )
    assert answered.status_code == 200, answered.text
    recorded = db.get(ModelOutput, answered.json()["output_id"])
    assert recorded is not None
    assert "EMR-4711" not in recorded.input_ref
    assert "/ref-sha256:" in recorded.input_ref


def test_runs_left_by_a_stopped_server_are_failed_at_the_next_start(
    kernel, db: Session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from tianfu.ai import service
    from tianfu.ai.tables import ValidationRun
    from tianfu.core.db import utcnow

    old = utcnow() - timedelta(hours=1)
    for status, heartbeat in (("running", old), ("queued", old), ("running", utcnow()), ("done", old)):
        db.add(
            ValidationRun(
                model_name="m",
                model_version="1",
                task="t",
                dataset_name="d",
                dataset_sha256="0" * 64,
                status=status,
                heartbeat_at=heartbeat,
            )
        )
    db.commit()
    assert service.recover_interrupted_runs(db, tmp_path) == 2
    db.commit()
    statuses = sorted(r.status for r in db.query(ValidationRun))
    assert statuses == ["done", "failed", "failed", "running"]  # another worker's live run is left alone
