"""Attachments, live-session scheduling, entered-in-error, administration, legal hold, and the end of the
consultant's access to the chart: through the API, as the demo users."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tests.consult.test_api import API, _act, _consent, _draft
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.tables import ConsultAttachment, ConsultMessage
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import CareGrant

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00"


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def _in_progress(client: TestClient, db: Session, demo: Demo) -> tuple[str, dict[str, str], dict[str, str]]:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao), ("start", huang)):
        response = _act(client, cid, action, who)
        assert response.status_code == 200, response.text
    return cid, huang, zhao


def _upload(
    client: TestClient,
    cid: str,
    headers: dict[str, str],
    data: bytes,
    name: str = "知情同意书.pdf",
    content_type: str = "application/pdf",
    description: str = "",
) -> Any:
    return client.post(
        f"{API}/consultations/{cid}/attachments",
        files={"file": (name, data, content_type)},
        data={"description": description},
        headers=headers,
    )


def _actions(db: Session, cid: str) -> list[str]:
    db.expire_all()
    actions = list(db.scalars(select(AuditRecord.action).where(AuditRecord.resource_id == cid)))
    db.rollback()  # SQLite: a test's open read transaction would block the app's writes
    return actions


def test_attachments_upload_list_download_and_cite(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    uploaded = _upload(client, cid, huang, PDF, description="患者签署的知情同意书扫描件")
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["filename"] == "知情同意书.pdf"
    assert body["content_type"] == "application/pdf"
    assert body["size"] == len(PDF)
    assert body["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert body["uploaded_by"] == demo.user("dr.huang").id
    assert body["uploaded_by_name"] == "黄强"
    assert body["institution_id"] == demo.organization("JJSQ").id
    assert set(body) == {
        "id",
        "filename",
        "content_type",
        "size",
        "sha256",
        "description",
        "uploaded_by",
        "uploaded_by_name",
        "institution_id",
        "created_at",
    }
    # DICOM and PNG from the other side; octet-stream is taken for what the bytes are.
    dicom = _upload(client, cid, zhao, DICOM, "ct.dcm", "application/dicom")
    assert dicom.status_code == 201, dicom.text
    png = _upload(client, cid, zhao, PNG, "ecg.png", "application/octet-stream")
    assert png.json()["content_type"] == "image/png"

    listed = client.get(f"{API}/consultations/{cid}/attachments", headers=zhao)
    assert [a["id"] for a in listed.json()["items"]] == [body["id"], dicom.json()["id"], png.json()["id"]]

    got = client.get(f"{API}/consultations/{cid}/attachments/{body['id']}", headers=zhao)
    assert got.status_code == 200
    assert got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["x-content-type-options"] == "nosniff"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%E7%9F%A5" in disposition

    # The bytes are encrypted at rest.
    stored = db.scalars(select(ConsultAttachment).where(ConsultAttachment.id == body["id"])).one()
    assert PDF not in stored.content_sealed
    assert stored.retain_until is not None
    db.rollback()

    # A message cites attachments of this consultation only.
    posted = client.post(
        f"{API}/consultations/{cid}/messages",
        json={"body": "同意书与心电图已上传", "attachment_ids": [body["id"], png.json()["id"]]},
        headers=huang,
    )
    assert posted.status_code == 201, posted.text
    assert posted.json()["attachment_ids"] == [body["id"], png.json()["id"]]
    messages = client.get(f"{API}/consultations/{cid}/messages", headers=zhao).json()
    assert messages[-1]["attachment_ids"] == [body["id"], png.json()["id"]]
    other, _, _ = _in_progress(client, db, demo)
    foreign = _upload(client, other, huang, PDF)
    assert foreign.status_code == 201
    wrong = client.post(
        f"{API}/consultations/{cid}/messages",
        json={"body": "x", "attachment_ids": [foreign.json()["id"]]},
        headers=huang,
    )
    assert wrong.status_code == 422
    assert (
        client.get(f"{API}/consultations/{cid}/attachments/{foreign.json()['id']}", headers=huang).status_code
        == 404
    )

    actions = _actions(db, cid)
    assert actions.count("consult.attachment.upload") == 3
    assert "consult.attachment.download" in actions
    assert "consult.attachment.list" in actions


def test_attachments_refused_types_sizes_and_people(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang, _zhao = _in_progress(client, db, demo)
    exe = _upload(
        client, cid, huang, b"MZ\x90\x00\x03" + b"\x00" * 40, "virus.exe", "application/x-msdownload"
    )
    assert exe.status_code == 415
    assert exe.headers["content-type"] == "application/problem+json"
    disguised = _upload(client, cid, huang, b"MZ\x90\x00\x03\x00\x00\xff", "scan.pdf", "application/pdf")
    assert disguised.status_code == 415
    mismatch = _upload(client, cid, huang, PNG, "scan.pdf", "application/pdf")
    assert mismatch.status_code == 415
    assert "image/png" in mismatch.json()["detail"]
    assert _upload(client, cid, huang, b"", "empty.txt", "text/plain").status_code == 422
    text = _upload(client, cid, huang, "血压 150/90".encode(), "note.txt", "text/plain; charset=utf-8")
    assert text.status_code == 201
    assert text.json()["content_type"] == "text/plain"
    from tianfu.consult.attachments import MAX_ATTACHMENT_BYTES

    big = _upload(client, cid, huang, b"%PDF-" + b"0" * MAX_ATTACHMENT_BYTES, "big.pdf")
    assert big.status_code == 413
    # Outsiders and auditors: not found or not allowed.
    for outsider in ("dr.zhang", "nurse.zhou"):
        headers = issue_token(db, outsider)
        assert _upload(client, cid, headers, PDF).status_code == 404
        assert client.get(f"{API}/consultations/{cid}/attachments", headers=headers).status_code == 404
        got = client.get(f"{API}/consultations/{cid}/attachments/{text.json()['id']}", headers=headers)
        assert got.status_code == 404
    assert _upload(client, cid, issue_token(db, "auditor"), PDF).status_code == 403


def test_no_files_in_draft_or_entered_in_error(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    assert _upload(client, cid, huang, PDF).status_code == 422
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200
    assert _upload(client, cid, huang, PDF).status_code == 201
    admin = issue_token(db, "admin.jj")
    assert (
        client.post(
            f"{API}/consultations/{cid}/actions/entered-in-error",
            json={"reason": "患者信息录错"},
            headers=admin,
        ).status_code
        == 200
    )
    assert _upload(client, cid, huang, PDF).status_code == 422
    # What was there stays readable to the participants.
    assert len(client.get(f"{API}/consultations/{cid}/attachments", headers=huang).json()["items"]) == 1


def test_entered_in_error_by_an_administrator_of_either_side_with_a_reason(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    url = f"{API}/consultations/{cid}/actions/entered-in-error"
    tfrm_admin, jj_admin = issue_token(db, "admin"), issue_token(db, "admin.jj")
    # Clinicians lack the role; the generic action route does not take it either.
    assert client.post(url, json={"reason": "x"}, headers=huang).status_code == 403
    assert _act(client, cid, "mark-entered-in-error", huang, reason="x").status_code == 422
    missing = client.post(url, json={"reason": "   "}, headers=jj_admin)
    assert missing.status_code == 422
    marked = client.post(url, json={"reason": "选错了患者"}, headers=tfrm_admin)
    assert marked.status_code == 200, marked.text
    assert marked.json()["status"] == "entered-in-error"
    assert marked.json()["business_status"] == "录入错误"
    assert "case_summary" not in marked.json()  # the administrator reads no clinical content
    history = client.get(f"{API}/consultations/{cid}", headers=huang).json()["history"]
    assert history[-1]["reason"] == "选错了患者"
    # Kept: both sides still read it; the consultant's chart access ended.
    assert client.get(f"{API}/consultations/{cid}", headers=huang).json()["status"] == "entered-in-error"
    assert client.get(f"{API}/consultations/{cid}", headers=zhao).status_code == 200
    assert "consult.mark-entered-in-error" in _actions(db, cid)
    again = client.post(url, json={"reason": "again"}, headers=jj_admin)
    assert again.status_code == 422


def test_consultant_loses_the_chart_but_keeps_the_record(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    patient = demo.patient("黄玉珍").id
    cid, huang, zhao = _in_progress(client, db, demo)
    assert client.get(f"/api/v1/patients/{patient}", headers=zhao).status_code == 200
    opinion = {
        "opinion": "考虑稳定型心绞痛，建议行冠脉CTA",
        "signing_pin": "246810",
        "signing_pin_confirmation": "246810",
    }
    assert client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=zhao).status_code == 201
    chart = client.get(f"/api/v1/patients/{patient}", headers=zhao)
    assert chart.status_code in (403, 404), chart.text
    # Nor does the case packet show him the patient's data any more; the inviting side still reads it.
    packet = f"{API}/consultations/{cid}/case-packet"
    assert client.get(packet, headers=zhao).status_code == 403
    assert client.get(packet, headers=huang).status_code == 200
    assert client.get(f"{API}/consultations/{cid}", headers=zhao).json()["status"] == "completed"
    signed = client.get(f"{API}/consultations/{cid}/opinion", headers=zhao).json()
    assert signed["signed"] is True
    assert signed["valid"] is True
    db.expire_all()
    grants = db.scalars(
        select(CareGrant).where(CareGrant.patient_id == patient, CareGrant.reason == f"consultation {cid}")
    ).all()
    assert len(grants) == 1
    assert grants[0].revoked_at is not None
    db.rollback()
    # The inviting physician's own access is untouched.
    assert client.get(f"/api/v1/patients/{patient}", headers=huang).status_code == 200


def test_a_second_consultation_keeps_its_own_grant(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    patient = demo.patient("黄玉珍").id
    first, huang, zhao = _in_progress(client, db, demo)
    second, _, _ = _in_progress(client, db, demo)
    assert _act(client, first, "fail", huang, reason="网络中断无法继续").status_code == 200
    assert client.get(f"/api/v1/patients/{patient}", headers=zhao).status_code == 200
    assert _act(client, second, "fail", zhao, reason="患者转院").status_code == 200
    assert client.get(f"/api/v1/patients/{patient}", headers=zhao).status_code in (403, 404)


def test_scheduling_a_live_session(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    start = datetime.now(UTC) + timedelta(days=1)
    slot = {
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=45)).isoformat(),
        "note": "视频会诊",
    }
    assert client.post(f"{API}/consultations/{cid}/schedule", json=slot, headers=huang).status_code == 422
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao)):
        assert _act(client, cid, action, who).status_code == 200
    backwards = {**slot, "end": (start - timedelta(minutes=1)).isoformat()}
    assert (
        client.post(f"{API}/consultations/{cid}/schedule", json=backwards, headers=huang).status_code == 422
    )
    proposed = client.post(f"{API}/consultations/{cid}/schedule", json=slot, headers=zhao)
    assert proposed.status_code == 201, proposed.text
    appointment = proposed.json()["id"]
    respond = f"{API}/consultations/{cid}/schedule/{appointment}/respond"
    # The proposer cannot confirm his own proposal; the other institution does.
    assert client.post(respond, json={"accept": True}, headers=zhao).status_code == 403
    outsider = issue_token(db, "dr.zhang")
    assert client.post(respond, json={"accept": True}, headers=outsider).status_code == 404
    booked = client.post(respond, json={"accept": True}, headers=huang)
    assert booked.status_code == 200, booked.text
    assert booked.json()["status"] == "booked"
    assert client.post(respond, json={"accept": False}, headers=huang).status_code == 422
    detail = client.get(f"{API}/consultations/{cid}", headers=huang).json()
    assert [a["status"] for a in detail["appointments"]] == ["booked"]
    assert datetime.fromisoformat(detail["scheduled_at"]) == start.replace(microsecond=start.microsecond)
    second = client.post(f"{API}/consultations/{cid}/schedule", json=slot, headers=huang).json()
    declined = client.post(
        f"{API}/consultations/{cid}/schedule/{second['id']}/respond", json={"accept": False}, headers=zhao
    )
    assert declined.json()["status"] == "declined"
    # Rescheduling: booking a new slot supersedes the earlier booking and any other open proposal.
    later = {
        k: (datetime.fromisoformat(v) + timedelta(days=1)).isoformat() for k, v in slot.items() if k != "note"
    }
    third = client.post(f"{API}/consultations/{cid}/schedule", json=later, headers=huang).json()
    fourth = client.post(f"{API}/consultations/{cid}/schedule", json=later, headers=huang).json()
    rebooked = f"{API}/consultations/{cid}/schedule/{third['id']}/respond"
    assert client.post(rebooked, json={"accept": True}, headers=zhao).status_code == 200
    statuses = {
        a["id"]: a["status"]
        for a in client.get(f"{API}/consultations/{cid}", headers=huang).json()["appointments"]
    }
    assert statuses[appointment] == "superseded"
    assert statuses[third["id"]] == "booked"
    assert statuses[fourth["id"]] == "superseded"
    actions = _actions(db, cid)
    assert {"consult.appointment.propose", "consult.appointment.book", "consult.appointment.decline"} <= set(
        actions
    )


def test_agreements_are_managed_by_the_institutions_administrators(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    jj_admin, tfrm_admin = issue_token(db, "admin.jj"), issue_token(db, "admin")
    listed = client.get(f"{API}/agreements", headers=jj_admin).json()["items"]
    assert len(listed) == 1
    agreement = listed[0]["id"]
    assert client.get(f"{API}/agreements", headers=issue_token(db, "dr.huang")).status_code == 403
    # Terminated (kept): the next submission is refused for want of an active agreement.
    assert (
        client.post(
            f"{API}/agreements/{agreement}/terminate", json={"reason": ""}, headers=jj_admin
        ).status_code
        == 422
    )
    ended = client.post(
        f"{API}/agreements/{agreement}/terminate", json={"reason": "协议到期未续签"}, headers=jj_admin
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "terminated"
    assert ended.json()["termination_reason"] == "协议到期未续签"
    cid, huang = _draft(client, db, demo)
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    refused = _act(client, cid, "submit", huang)
    assert refused.status_code == 422
    assert next(e["code"] for e in refused.json()["errors"]).startswith("agreement.")
    # A new agreement, recorded by the other side's administrator, lets it through.
    new = client.post(
        f"{API}/agreements",
        json={
            "other_institution_id": demo.organization("JJSQ").id,
            "title": "续签远程医疗合作协议",
            "valid_from": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "document_ref": "archive://2026/001",
        },
        headers=tfrm_admin,
    )
    assert new.status_code == 201, new.text
    assert new.json()["first_institution_id"] == demo.organization("TFRM").id
    assert _act(client, cid, "submit", huang).status_code == 200
    own = {
        "other_institution_id": demo.organization("TFRM").id,
        "title": "x",
        "valid_from": new.json()["valid_from"],
    }
    assert client.post(f"{API}/agreements", json=own, headers=tfrm_admin).status_code == 422
    # An administrator of neither institution does not see or end it: the demo has two, so check ids.
    assert {a["id"] for a in client.get(f"{API}/agreements", headers=tfrm_admin).json()["items"]} == {
        agreement,
        new.json()["id"],
    }
    audited = set(db.scalars(select(AuditRecord.action).where(AuditRecord.resource_type == "Contract")))
    assert {"consult.agreement.list", "consult.agreement.terminate", "consult.agreement.create"} <= audited


def test_qualifications_only_for_own_staff_and_they_gate_assignment(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    tfrm_admin, jj_admin = issue_token(db, "admin"), issue_token(db, "admin.jj")
    zhao_id = demo.user("consult.zhao").id
    current = [
        q
        for q in client.get(f"{API}/qualifications", headers=tfrm_admin).json()["items"]
        if q["superseded_at"] is None
    ]
    assert [q["user_id"] for q in current] == [zhao_id]
    assert client.get(f"{API}/qualifications", headers=jj_admin).json()["items"] == []
    body = {
        "user_id": zhao_id,
        "specialties": ["心血管内科"],
        "title": 4,
        "independent_practice_since": "1999-07-01",
        "licence_suspended": True,
    }
    assert client.post(f"{API}/qualifications", json=body, headers=jj_admin).status_code == 404
    recorded = client.post(f"{API}/qualifications", json=body, headers=tfrm_admin)
    assert recorded.status_code == 201, recorded.text
    items = client.get(f"{API}/qualifications", headers=tfrm_admin).json()["items"]
    assert [q["id"] for q in items if q["superseded_at"] is None] == [recorded.json()["id"]]
    # A suspended licence stops the assignment (TC-05).
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200
    refused = _act(client, cid, "accept", zhao)
    assert refused.status_code == 422
    assert any("licen" in e["code"] for e in refused.json()["errors"]), refused.json()
    superseded = client.post(
        f"{API}/qualifications/{recorded.json()['id']}/supersede",
        json={"reason": "执业状态已恢复"},
        headers=tfrm_admin,
    )
    assert superseded.status_code == 200, superseded.text
    assert superseded.json()["supersede_reason"] == "执业状态已恢复"
    again = client.post(
        f"{API}/qualifications/{recorded.json()['id']}/supersede", json={"reason": "x"}, headers=tfrm_admin
    )
    assert again.status_code == 422


def test_legal_hold_by_admin_or_auditor_with_reason(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    jj_admin, auditor = issue_token(db, "admin.jj"), issue_token(db, "auditor")
    url = f"{API}/consultations/{cid}/legal-hold"
    assert client.post(url, json={"hold": True, "reason": "x"}, headers=huang).status_code == 403
    assert client.post(url, json={"hold": True, "reason": ""}, headers=jj_admin).status_code == 422
    placed = client.post(url, json={"hold": True, "reason": "医疗纠纷封存"}, headers=jj_admin)
    assert placed.status_code == 200, placed.text
    assert placed.json()["legal_hold"] is True
    assert "reason" not in placed.json()  # the request's clinical text is not the administrator's to read
    assert client.post(url, json={"hold": True, "reason": "again"}, headers=jj_admin).status_code == 422
    lifted = client.post(
        f"{API}/review/consultations/{cid}/legal-hold",
        json={"hold": False, "reason": "纠纷已结案"},
        headers=auditor,
    )
    assert lifted.status_code == 200
    assert lifted.json()["legal_hold"] is False
    # A hold the auditor places is the auditor's to lift, not an institution administrator's.
    review = f"{API}/review/consultations/{cid}/legal-hold"
    assert client.post(review, json={"hold": True, "reason": "监管检查"}, headers=auditor).status_code == 200
    assert client.post(url, json={"hold": False, "reason": "x"}, headers=jj_admin).status_code == 403
    assert client.post(review, json={"hold": False, "reason": "检查结束"}, headers=auditor).status_code == 200
    actions = _actions(db, cid)
    assert {"consult.legal-hold.place", "consult.legal-hold.lift"} <= set(actions)
    retention = client.get(f"{API}/review/retention", headers=auditor)
    assert retention.status_code == 200
    assert retention.json()["items"] == []  # nothing is 30 years old in the demo


def test_detail_shows_deadline_notices_and_the_queue_overdue(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    from tianfu.consult.timers import sweep

    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    submitted = _act(client, cid, "submit", huang).json()
    due = datetime.fromisoformat(submitted["response_due_at"])
    assert submitted["overdue"] is False
    with kernel.sessions() as session, session.begin():
        sent = sweep(session, kernel.audit, now=due + timedelta(seconds=1))
    assert [n.kind.value for n in sent] == ["escalation"]
    detail = client.get(f"{API}/consultations/{cid}", headers=huang).json()
    assert [(n["stage"], n["kind"]) for n in detail["deadline_notices"]] == [("acknowledge", "escalation")]
    queue = client.get(f"{API}/consultations/incoming", headers=zhao).json()["items"]
    assert queue[0]["id"] == cid
    assert queue[0]["response_due_at"] == submitted["response_due_at"]


def test_messages_keep_working_without_attachments(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, _huang, zhao = _in_progress(client, db, demo)
    posted = client.post(f"{API}/consultations/{cid}/messages", json={"body": "请补充心电图"}, headers=zhao)
    assert posted.json()["attachment_ids"] == []
    stored = db.scalars(select(ConsultMessage).where(ConsultMessage.id == posted.json()["id"])).one()
    assert stored.retain_until is not None
    assert stored.retain_until.year - stored.sent_at.year == 3
