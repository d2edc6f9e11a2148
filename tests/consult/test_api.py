"""The consultation API end to end: a community physician invites the tertiary hospital's consultant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.tables import OpinionVersion
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel
from tianfu.demo import DEMO_PASSWORD

API = "/api/v1/consult"


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def _invitation() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "reason": "血糖控制不佳伴胸闷",
        "purpose": "请心内科专家评估是否需转诊",
        "case_summary": "76岁女性，2型糖尿病，近一周活动后胸闷。",
        "specialty": "心血管内科",
        "title": 3,
        "time_frame_earliest": now.isoformat(),
        "time_frame_latest": (now + timedelta(days=2)).isoformat(),
        "priority": "urgent",
    }


def _draft(client: TestClient, db: Session, demo: Demo) -> tuple[str, dict[str, str]]:
    huang = issue_token(db, "dr.huang")
    body = {
        "patient_id": demo.patient("黄玉珍").id,
        "invited_institution_id": demo.organization("TFRM").id,
        **_invitation(),
    }
    response = client.post(f"{API}/consultations", json=body, headers=huang)
    assert response.status_code == 201, response.text
    assert response.json()["business_status"] == "草稿"
    return response.json()["id"], huang


def _consent(client: TestClient, cid: str, headers: dict[str, str], kind: str) -> dict[str, Any]:
    response = client.post(
        f"{API}/consultations/{cid}/consents",
        json={"kind": kind, "signed_form_ref": f"scan://{kind}.pdf"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _act(client: TestClient, cid: str, action: str, headers: dict[str, str], **body: Any) -> Any:
    return client.post(f"{API}/consultations/{cid}/actions/{action}", json=body, headers=headers)


def test_from_draft_to_signed_opinion_and_decision(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    # The draft is the inviting physician's alone.
    assert client.get(f"{API}/consultations/{cid}", headers=zhao).status_code == 404

    refused = _act(client, cid, "submit", huang)
    assert refused.status_code == 422
    codes = {e["code"] for e in refused.json()["errors"]}
    assert codes == {"consent.treatment.missing", "consent.data_sharing.missing"}
    assert all(e["message_zh"] for e in refused.json()["errors"])

    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    submitted = _act(client, cid, "submit", huang)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["business_status"] == "已提交申请"
    assert submitted.json()["response_due_at"] is not None

    queue = client.get(f"{API}/consultations/incoming", headers=zhao).json()["items"]
    assert [c["id"] for c in queue] == [cid]
    assert _act(client, cid, "receive", zhao).json()["status"] == "received"
    packet = client.get(f"{API}/consultations/{cid}/case-packet", headers=zhao)
    assert packet.status_code == 200, packet.text
    assert packet.json()["case_summary"].startswith("76岁")
    accepted = _act(client, cid, "accept", zhao)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["assigned_consultant_id"] == demo.user("consult.zhao").id
    assert _act(client, cid, "start", huang).json()["business_status"] == "会诊中"

    posted = client.post(f"{API}/consultations/{cid}/messages", json={"body": "请补充心电图"}, headers=zhao)
    assert posted.status_code == 201
    reply = {"body": "已上传", "in_response_to_id": posted.json()["id"]}
    assert client.post(f"{API}/consultations/{cid}/messages", json=reply, headers=huang).status_code == 201
    assert len(client.get(f"{API}/consultations/{cid}/messages", headers=zhao).json()) == 2

    # Only the assigned consultant signs, and the inviting physician cannot.
    opinion = {
        "opinion": "考虑稳定型心绞痛，建议行冠脉CTA",
        "diagnosis": "稳定型心绞痛",
        "signing_pin": "246810",
        "signing_pin_confirmation": "246810",
    }
    assert client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=huang).status_code == 403
    signed = client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=zhao)
    assert signed.status_code == 201, signed.text
    assert signed.json()["valid"] is True
    detail = client.get(f"{API}/consultations/{cid}", headers=huang).json()
    assert detail["business_status"] == "已出具意见"
    assert client.get(f"{API}/consultations/{cid}/opinion", headers=huang).json()["valid"] is True

    # The consultant cannot record the inviting side's decision; the inviting physician does, once.
    assert (
        client.post(f"{API}/consultations/{cid}/decision", json={"decision": "x"}, headers=zhao).status_code
        == 422
    )
    decided = client.post(
        f"{API}/consultations/{cid}/decision", json={"decision": "转诊行冠脉CTA"}, headers=huang
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["business_status"] == "邀请方已采纳/处理"
    again = client.post(f"{API}/consultations/{cid}/decision", json={"decision": "again"}, headers=huang)
    assert [e["code"] for e in again.json()["errors"]] == ["decision.already_recorded"]

    amended = client.post(
        f"{API}/consultations/{cid}/opinion/amendments",
        json={**opinion, "recommendations": "加做运动负荷试验", "reason": "补充建议"},
        headers=zhao,
    )
    assert amended.status_code == 201, amended.text
    assert [v["version"] for v in amended.json()["versions"]] == [1, 2]
    assert amended.json()["valid"] is True
    history = [h["target"] for h in detail["history"]]
    assert history == ["requested", "received", "accepted", "in-progress", "completed"]

    # The home page lists it for both sides.
    client.cookies.clear()
    page = client.get("/consult", headers=huang)
    assert page.status_code == 200
    assert "邀请方已采纳/处理" in page.text


def test_tampered_report_is_detected_on_read(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao), ("start", huang)):
        assert _act(client, cid, action, who).status_code == 200
    opinion = {"opinion": "建议保守治疗", "signing_pin": "246810", "signing_pin_confirmation": "246810"}
    assert client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=zhao).status_code == 201
    with kernel.sessions() as session, session.begin():
        row = session.scalars(select(OpinionVersion).where(OpinionVersion.consultation_id == cid)).one()
        session.execute(
            update(OpinionVersion)
            .where(OpinionVersion.id == row.id)
            .values(canonical_content=row.canonical_content.replace("保守", "手术"))
        )
    read = client.get(f"{API}/consultations/{cid}/opinion", headers=huang).json()
    assert read["valid"] is False
    assert "v1: content_changed" in read["problems"]
    # A forged report cannot be amended into a valid chain either.
    amend = client.post(
        f"{API}/consultations/{cid}/opinion/amendments", json={**opinion, "reason": "r"}, headers=zhao
    )
    assert amend.status_code == 422


def test_only_participants_see_it_and_auditors_read_only(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200
    for outsider in ("dr.zhang", "rad.liu", "nurse.zhou"):
        headers = issue_token(db, outsider)
        assert client.get(f"{API}/consultations/{cid}", headers=headers).status_code == 404
        assert client.get(f"{API}/consultations/{cid}/messages", headers=headers).status_code == 404
    auditor = issue_token(db, "auditor")
    assert client.get(f"{API}/consultations/{cid}", headers=auditor).status_code == 403
    assert _act(client, cid, "cancel", auditor, reason="x").status_code == 403
    reviewed = client.get(f"{API}/review/consultations/{cid}", headers=auditor)
    assert reviewed.status_code == 200
    assert reviewed.json()["status"] == "requested"
    assert [c["id"] for c in client.get(f"{API}/review/consultations", headers=auditor).json()["items"]] == [
        cid
    ]
    actions = set(db.scalars(select(AuditRecord.action).where(AuditRecord.resource_id == cid)))
    assert {"consult.create", "consult.submit", "consult.review.read"} <= actions


def test_withdrawn_consent_stops_progress_and_the_case_packet(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    sharing = _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200
    withdrawn = client.post(
        f"{API}/consultations/{cid}/consents/{sharing['id']}/withdraw",
        json={"reason": "患者撤回"},
        headers=huang,
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["withdrawn_at"]
    refused = _act(client, cid, "receive", zhao)
    assert [e["code"] for e in refused.json()["errors"]] == ["consent.data_sharing.withdrawn"]
    assert client.get(f"{API}/consultations/{cid}/case-packet", headers=zhao).status_code == 403
    # Rejecting stays possible, with a reason.
    assert [e["code"] for e in _act(client, cid, "reject", zhao).json()["errors"]] == ["reason.missing"]
    assert _act(client, cid, "reject", zhao, reason="患者撤回同意").json()["business_status"] == "已拒绝"


def test_no_agreement_no_request(client: TestClient, db: Session, demo: Demo) -> None:
    cid, huang = _draft(client, db, demo)  # no demo network seeded: no agreement
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    refused = _act(client, cid, "submit", huang)
    assert refused.status_code == 422
    assert [e["code"] for e in refused.json()["errors"]] == ["agreement.missing"]
    assert refused.headers["content-type"] == "application/problem+json"


def test_signing_needs_the_signers_pin(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    """SEC-07 / 电子签名法 art. 13: the key opens only with the consultant's PIN; wrong PINs lock it."""
    from tianfu.consult.tables import SignerKey

    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao), ("start", huang)):
        assert _act(client, cid, action, who).status_code == 200
    url = f"{API}/consultations/{cid}/opinion"
    body = {"opinion": "建议保守治疗", "signing_pin": "246810"}
    assert client.post(url, json={**body, "signing_pin": "12345"}, headers=zhao).status_code == 422  # short
    unset = client.post(url, json=body, headers=zhao)  # the first time the PIN needs confirming
    assert unset.status_code == 422
    assert "signing_pin_confirmation" in unset.json()["detail"]
    mismatch = client.post(url, json={**body, "signing_pin_confirmation": "246811"}, headers=zhao)
    assert mismatch.status_code == 422
    assert (
        client.post(url, json={**body, "signing_pin_confirmation": "246810"}, headers=zhao).status_code == 201
    )
    key = db.scalars(select(SignerKey)).one()
    assert key.pin_sealed_key
    assert key.private_key_sealed is None
    assert "246810" not in key.pin_sealed_key
    first_fingerprint = key.fingerprint
    db.rollback()

    amend = {**body, "reason": "补充", "recommendations": "复诊"}
    amend_url = f"{url}/amendments"
    for attempt in range(1, 6):
        wrong = client.post(amend_url, json={**amend, "signing_pin": "000000"}, headers=zhao)
        assert wrong.status_code == 403, wrong.text
        assert ("locked" if attempt == 5 else "tries left") in wrong.json()["detail"]
    locked = client.post(amend_url, json=amend, headers=zhao)  # even the right PIN, once locked
    assert locked.status_code == 403
    assert "locked" in locked.json()["detail"]
    audited = db.scalars(
        select(AuditRecord).where(AuditRecord.action == "consult.signing-key.wrong-pin")
    ).all()
    assert len(audited) == 5
    db.rollback()

    # A new key under a new PIN: a new fingerprint; the first version still verifies against the old key.
    renewed = {
        **amend,
        "signing_pin": "13579bdf",
        "signing_pin_confirmation": "13579bdf",
        "new_signing_key": True,
    }
    # Replacing a key needs the login password: a hijacked session cannot swap in a key of its own.
    no_password = client.post(amend_url, json=renewed, headers=zhao)
    assert no_password.status_code == 403
    assert "login password" in no_password.json()["detail"]
    wrong_password = client.post(amend_url, json={**renewed, "password": "not-it"}, headers=zhao)
    assert wrong_password.status_code == 403
    renewed["password"] = DEMO_PASSWORD
    assert client.post(amend_url, json=renewed, headers=zhao).status_code == 201
    read = client.get(url, headers=huang).json()
    assert read["valid"], read["problems"]
    fingerprints = [v["public_key_fingerprint"] for v in read["versions"]]
    assert fingerprints[0] == first_fingerprint != fingerprints[1]


def test_admin_unlocks_and_pre_pin_keys_verify_but_never_sign(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    from tianfu.consult.tables import SignerKey

    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao), ("start", huang)):
        assert _act(client, cid, action, who).status_code == 200
    url = f"{API}/consultations/{cid}/opinion"
    body = {"opinion": "建议保守治疗", "signing_pin": "246810", "signing_pin_confirmation": "246810"}
    assert client.post(url, json=body, headers=zhao).status_code == 201
    amend = {"opinion": "补充", "reason": "补充", "signing_pin": "000000"}
    for _ in range(5):
        assert client.post(f"{url}/amendments", json=amend, headers=zhao).status_code == 403
    db.rollback()

    unlock = f"{API}/signing-keys/{demo.user('consult.zhao').id}/unlock"
    assert client.post(unlock, headers=issue_token(db, "admin.jj")).status_code == 403  # another institution
    assert client.post(unlock, headers=huang).status_code == 403  # not an administrator
    admin = issue_token(db, "admin")
    assert client.post(unlock, headers=admin).status_code == 204
    assert client.post(unlock, headers=admin).status_code == 422  # nothing left to unlock
    db.rollback()
    amend["signing_pin"] = "246810"
    assert client.post(f"{url}/amendments", json=amend, headers=zhao).status_code == 201

    # A key from before signing PINs (sealed by the server only): its signatures still verify, but it
    # never signs again: the next signature enrols a PIN-protected key.
    with kernel.sessions() as session, session.begin():
        key = session.scalars(select(SignerKey)).one()
        key.private_key_sealed, key.pin_sealed_key = kernel.secret_box.seal("{}"), None
    assert client.get(url, headers=huang).json()["valid"]
    again = {**amend, "reason": "再补充"}
    refused = client.post(f"{url}/amendments", json=again, headers=zhao)
    assert refused.status_code == 422
    assert "signing_pin_confirmation" in refused.json()["detail"]
    again["signing_pin_confirmation"] = "246810"
    assert client.post(f"{url}/amendments", json=again, headers=zhao).status_code == 201
    read = client.get(url, headers=huang).json()
    assert read["valid"], read["problems"]
    assert len({v["public_key_fingerprint"] for v in read["versions"]}) == 2
