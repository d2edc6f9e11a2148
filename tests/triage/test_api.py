"""Triage through the app: a patient's self-service interview, the nurse's desk, access and audit."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.core.audit.models import AuditRecord
from tianfu.core.model_outputs.models import ModelFeedback, ModelOutput
from tianfu.triage.tables import TriageAssessment, TriageSession

Login = Callable[[str], dict[str, str]]
API = "/api/v1/triage"


def interview(
    client: TestClient, headers: dict[str, str], body: dict[str, object], answer: str = "unsure"
) -> dict:
    response = client.post(f"{API}/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    session = response.json()
    for _ in range(25):
        if session["question"] is None:
            break
        response = client.post(
            f"{API}/sessions/{session['id']}/answers",
            json={"symptom": session["question"]["symptom"], "answer": answer},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        session = response.json()
    return session


def test_a_patient_triages_herself_and_gets_no_level(
    client: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    patient = token_for("patient.liu")
    session = interview(client, patient, {"text": "咳嗽，流鼻涕，打喷嚏，没有发烧"})
    assert session["status"] == "waiting"
    assert session["channel"] == "self_service"
    assert session["patient_id"] == demo.patient("刘芳").id
    known = {k["symptom"]: k["value"] for k in session["known"]}
    assert known.get("咳嗽") is True
    assert known.get("发烧") is False
    result = client.get(f"{API}/sessions/{session['id']}/result", headers=patient).json()
    assert result["urgency"]["level"] is None
    assert session["level"] is None
    assert result["departments"]
    assert result["conditions"][0]["probability"] > 0
    assert "不是医学诊断" in result["disclaimer_zh"]
    output = db.scalars(
        select(ModelOutput).where(ModelOutput.input_ref == f"triage_session/{session['id']}")
    ).one()
    assert output.module == "triage"
    assert output.patient_id == session["patient_id"]
    actions = set(db.scalars(select(AuditRecord.action).where(AuditRecord.resource_id == session["id"])))
    assert {"triage.session.create", "triage.session.answer", "triage.session.read"} <= actions


def test_red_flags_send_a_self_service_patient_to_the_emergency_desk(
    client: TestClient, token_for: Login
) -> None:
    patient = token_for("patient.liu")
    response = client.post(f"{API}/sessions", json={"text": "胸口压榨样疼痛，出冷汗，咳嗽"}, headers=patient)
    session = client.post(f"{API}/sessions/{response.json()['id']}/finish", headers=patient).json()
    urgency = session["result"]["urgency"]
    assert urgency["go_to_emergency_desk"] is True
    assert urgency["level"] is None
    assert urgency["red_flags"]


def test_a_patient_cannot_see_another_patients_session(client: TestClient, token_for: Login) -> None:
    nurse = token_for("nurse.wang")
    session = interview(client, nurse, {"text": "咳嗽，发热", "visitor_label": "walk-in 7"})
    response = client.get(f"{API}/sessions/{session['id']}", headers=token_for("patient.liu"))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_the_nurse_desk_confirms_overrides_retriages_and_sends(
    client: TestClient, token_for: Login, db: Session
) -> None:
    nurse = token_for("nurse.wang")
    body = {
        "text": "孩子咳嗽，发烧，流鼻涕",
        "visitor_label": "王小明",
        "age_years": 4,
        "vitals": {"heart_rate": 110, "spo2": 97, "temperature": 38.5},
    }
    session = interview(client, nurse, body, answer="yes")
    sid = session["id"]
    assert session["status"] == "waiting"
    assert session["level"] in (3, 4)
    queue = client.get(f"{API}/queue", headers=nurse).json()
    assert sid in [s["id"] for s in queue]

    # An override without a reason is refused; with one, it is recorded as a disagreement.
    department = session["department_code"]
    refused = client.post(
        f"{API}/sessions/{sid}/decision", json={"level": 2, "department_code": department}, headers=nurse
    )
    assert refused.status_code == 422
    assert "reason" in refused.json()["detail"]
    decided = client.post(
        f"{API}/sessions/{sid}/decision",
        json={"level": 2, "department_code": department, "reason": "精神差，家长非常担心"},
        headers=nurse,
    )
    assert decided.status_code == 200
    assert decided.json()["level"] == 2
    assert decided.json()["status"] == "confirmed"
    feedback = db.scalars(
        select(ModelFeedback).join(ModelOutput).where(ModelOutput.input_ref == f"triage_session/{sid}")
    ).one()
    assert feedback.verdict == "disagree"
    assert feedback.corrected_label.startswith("2/")
    db.commit()  # end the read: on SQLite an open transaction blocks the app's writes

    # Vital signs worsen while waiting: a new assessment at level Ⅰ, never an overwrite.
    worse = client.post(
        f"{API}/sessions/{sid}/vitals", json={"vitals": {"spo2": 78, "heart_rate": 185}}, headers=nurse
    )
    assert worse.status_code == 200
    assert worse.json()["level"] == 1
    kinds = db.scalars(
        select(TriageAssessment.kind)
        .where(TriageAssessment.session_id == sid)
        .order_by(TriageAssessment.created_at)
    ).all()
    assert kinds == ["ai", "nurse", "retriage"]
    db.commit()

    sent = client.post(f"{API}/sessions/{sid}/send", headers=nurse)
    assert sent.status_code == 200
    assert sent.json()["status"] == "sent"
    assert sid not in [s["id"] for s in client.get(f"{API}/queue", headers=nurse).json()]
    assert db.get(TriageSession, sid) is not None


def test_hard_vital_sign_rules_win_at_the_desk(client: TestClient, token_for: Login) -> None:
    nurse = token_for("nurse.wang")
    body = {"text": "咳嗽", "visitor_label": "walk-in", "vitals": {"systolic_bp": 65, "heart_rate": 130}}
    session = interview(client, nurse, body)
    assert session["level"] == 1
    assert session["result"]["urgency"]["reasons"]


def test_bad_requests_get_problem_responses(client: TestClient, token_for: Login) -> None:
    nurse = token_for("nurse.wang")
    no_patient = client.post(f"{API}/sessions", json={"text": "咳嗽"}, headers=nurse)
    assert no_patient.status_code == 422
    assert no_patient.headers["content-type"].startswith("application/problem+json")
    bad_vitals = client.post(
        f"{API}/sessions", json={"text": "咳嗽", "visitor_label": "x", "vitals": {"spo2": 140}}, headers=nurse
    )
    assert bad_vitals.status_code == 422
    unknown = client.post(
        f"{API}/sessions", json={"text": "咳嗽", "visitor_label": "x", "model": "nope"}, headers=nurse
    )
    assert unknown.status_code == 422
    session = client.post(
        f"{API}/sessions", json={"text": "咳嗽", "visitor_label": "x"}, headers=nurse
    ).json()
    wrong = client.post(
        f"{API}/sessions/{session['id']}/answers",
        json={"symptom": "不存在的症状", "answer": "yes"},
        headers=nurse,
    )
    assert wrong.status_code == 422
    assert client.get(f"{API}/queue", headers=token_for("patient.liu")).status_code == 403


def test_urgency_endpoint(client: TestClient, token_for: Login) -> None:
    response = client.post(
        f"{API}/urgency", json={"text": "腹痛", "pain_score": 8}, headers=token_for("nurse.wang")
    )
    assert response.status_code == 200
    assert response.json()["level"] == 2


def test_pages_render(client: TestClient, token_for: Login) -> None:
    nurse = token_for("nurse.wang")
    session = interview(client, nurse, {"text": "咳嗽，发热", "visitor_label": "页面测试"})
    for path in ("/triage", "/triage/queue", "/triage/new", f"/triage/s/{session['id']}"):
        response = client.get(path, headers=nurse)
        assert response.status_code == 200, path
    patient = token_for("patient.liu")
    assert client.get("/triage", headers=patient).status_code == 200


def test_department_list_and_the_patient_page_panel(client: TestClient, token_for: Login, demo: Demo) -> None:
    departments = client.get(f"{API}/departments", headers=token_for("patient.liu")).json()
    assert {"emerg", "peds", "resp"} <= {d["code"] for d in departments}
    nurse = token_for("nurse.wang")
    patient = demo.patient("李建国")  # admitted to nurse Wang's ward
    session = interview(client, nurse, {"text": "咳嗽，发热", "patient_id": patient.id})
    assert session["patient_id"] == patient.id
    page = client.get(f"/patients/{patient.id}", headers=nurse)
    assert page.status_code == 200
    assert f"/triage/s/{session['id']}" in page.text


def test_a_nurse_cannot_triage_a_patient_outside_her_care(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    outside = demo.patient("陈淑华")  # respiratory ward, not hers
    response = client.post(
        f"{API}/sessions", json={"text": "咳嗽", "patient_id": outside.id}, headers=token_for("nurse.wang")
    )
    assert response.status_code == 403


def test_a_monitored_patients_vital_signs_reach_the_desk(
    client: TestClient, token_for: Login, demo: Demo, db: Session
) -> None:
    from datetime import UTC, datetime

    from tianfu.monitoring.tables import VitalSample

    patient = demo.patient("张德明")
    db.add(
        VitalSample(
            patient_id=patient.id,
            observed_at=datetime.now(UTC),
            heart_rate=128.0,
            systolic_bp=66.0,
            spo2=93.0,
        )
    )
    db.commit()
    nurse = token_for("nurse.wang")
    body = {"text": "头晕", "patient_id": patient.id}
    started = client.post(f"{API}/sessions", json=body, headers=nurse).json()
    session = client.post(f"{API}/sessions/{started['id']}/finish", headers=nurse).json()
    assert session["level"] == 1  # SBP < 70 from the bedside monitor: a hard rule
    assert any("70" in r["text_zh"] for r in session["result"]["urgency"]["reasons"])


def test_a_self_service_patient_at_the_desk_gets_a_level_from_her_vital_signs(
    client: TestClient, token_for: Login
) -> None:
    session = interview(client, token_for("patient.liu"), {"text": "咳嗽，发烧"})
    assert session["level"] is None
    nurse = token_for("nurse.wang")
    vitals = {"vitals": {"spo2": 85, "heart_rate": 118}}
    measured = client.post(f"{API}/sessions/{session['id']}/vitals", json=vitals, headers=nurse)
    assert measured.status_code == 200, measured.text
    assert measured.json()["level"] == 2  # SpO2 80–89 %: a hard rule at the desk
