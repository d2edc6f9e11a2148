"""The consultation pages: who sees which page, the wizard's forms, refusals in place, both languages."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tests.consult.test_api import API, _act, _consent, _draft
from tianfu.consult import pages
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.tables import Consultation, ConsultConsent, OpinionVersion
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel
from tianfu.demo import DEMO_PASSWORD

EN = {"Cookie": "tianfu_lang=en"}


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def _row(db: Session, cid: str) -> Consultation:
    """The stored consultation, read in a transaction that ends at once (SQLite: no lock held)."""
    row = db.get(Consultation, cid)
    assert row is not None
    db.refresh(row)
    db.commit()
    return row


def _form(headers: dict[str, str], **fields: str) -> Any:
    return {"data": fields, "headers": headers}


def _in_progress(client: TestClient, db: Session, demo: Demo) -> tuple[str, dict[str, str], dict[str, str]]:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("accept", zhao), ("start", huang)):
        assert _act(client, cid, action, who).status_code == 200
    return cid, huang, zhao


def test_wizard_walks_a_request_from_patient_to_submission(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    huang = issue_token(db, "dr.huang")
    patient = demo.patient("黄玉珍")
    tfrm = demo.organization("TFRM")

    step1 = client.get("/consult/new", headers=huang)
    assert step1.status_code == 200
    assert "选择" in step1.text or "哪位患者" in step1.text
    assert patient.name in step1.text
    # Only patients in the physician's care: another institution's patient is not offered.
    assert "刘芳" not in step1.text

    step2 = client.get(f"/consult/new?patient_id={patient.id}", headers=huang)
    assert step2.status_code == 200
    # Only institutions with an active agreement are offered.
    assert tfrm.id in step2.text
    assert demo.organization("JJSQ").id not in step2.text.split('name="invited_institution_id"', 1)[1]

    created = client.post(
        "/consult/new",
        **_form(
            huang, patient_id=patient.id, invited_institution_id=tfrm.id, specialty="心血管内科", title="3"
        ),
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    assert location.endswith("/wizard/details")
    cid = location.split("/")[2]

    details = client.post(
        f"/consult/{cid}/wizard/details",
        **_form(
            huang,
            reason="血糖控制不佳伴胸闷",
            purpose="请评估是否需转诊",
            case_summary="76岁女性，2型糖尿病。",
            time_frame_earliest="2030-01-01T08:00",
            time_frame_latest="2030-01-03T18:00",
            priority="urgent",
        ),
        follow_redirects=False,
    )
    assert details.status_code == 303
    row = _row(db, cid)
    assert row.reason == "血糖控制不佳伴胸闷"
    assert row.priority == "urgent"
    assert row.title == 3
    assert row.time_frame_earliest is not None
    assert row.time_frame_earliest.hour == 0

    # Back to step 2: the institution is fixed once the draft exists, specialty and title can change.
    back = client.get(f"/consult/{cid}/wizard/institution", headers=huang)
    assert back.status_code == 200
    assert 'name="invited_institution_id"' not in back.text
    again = client.post(
        f"/consult/{cid}/wizard/institution",
        **_form(huang, specialty="心血管内科", title="4"),
        follow_redirects=False,
    )
    assert again.status_code == 303
    assert _row(db, cid).title == 4

    # Submitting without consents: refused in place, listing every unmet gate in Chinese.
    review = client.post(f"/consult/{cid}/submit", headers=huang, follow_redirects=False)
    assert review.status_code == 422
    assert "TC-02" in review.text
    assert review.text.count("<li>") >= 2

    consents = client.post(
        f"/consult/{cid}/wizard/consents",
        **_form(huang, treatment_ref="scan://t.pdf", privacy_ref="scan://p.pdf"),
        follow_redirects=False,
    )
    assert consents.status_code == 303
    kinds = set(db.scalars(select(ConsultConsent.kind).where(ConsultConsent.consultation_id == cid)))
    db.commit()
    assert kinds == {"treatment", "patient-privacy"}
    assert "已登记" in client.get(f"/consult/{cid}/wizard/consents", headers=huang).text

    submitted = client.post(f"/consult/{cid}/submit", headers=huang, follow_redirects=False)
    assert submitted.status_code == 303
    assert _row(db, cid).status == "requested"
    # Once submitted, the wizard hands over to the consultation's page.
    handed_over = client.get(f"/consult/{cid}/wizard/review", headers=huang, follow_redirects=False)
    assert handed_over.status_code == 303
    home = client.get("/consult", headers=huang)
    assert "已提交申请" in home.text
    assert "我的申请" in home.text


def test_pages_only_for_participants(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    for path in ("", "/packet", "/report"):
        assert client.get(f"/consult/{cid}{path}", headers=huang).status_code == 200, path
        assert client.get(f"/consult/{cid}{path}", headers=zhao).status_code == 200, path
        for outsider in ("dr.zhang", "rad.liu", "nurse.zhou"):
            response = client.get(f"/consult/{cid}{path}", headers=issue_token(db, outsider))
            assert response.status_code == 404, (outsider, path)
            assert "黄玉珍" not in response.text
        assert client.get(f"/consult/{cid}{path}", headers=issue_token(db, "auditor")).status_code == 403
    # The consultant does not edit the inviting physician's draft.
    assert client.get(f"/consult/{cid}/wizard/details", headers=zhao).status_code in (403, 404)
    # The auditor reads through the review pages, read-only and audited.
    auditor = issue_token(db, "auditor")
    review = client.get(f"/consult/review/{cid}", headers=auditor)
    assert review.status_code == 200
    assert "只读" in review.text
    assert cid in client.get("/consult/review", headers=auditor).text
    assert client.get("/consult/review", headers=huang).status_code == 403
    assert "consult.review.read" in set(
        db.scalars(select(AuditRecord.action).where(AuditRecord.resource_id == cid))
    )


def test_queue_accept_discussion_sign_and_decision(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200

    queue = client.get("/consult", headers=zhao)
    assert "待处理会诊" in queue.text
    assert cid in queue.text
    page = client.get(f"/consult/{cid}", headers=zhao)
    assert "已提交申请" in page.text
    assert "符合资质" in page.text

    # Reject needs a reason: the form refuses an empty one (the gate lists TC-04 in place).
    refused = client.post(f"/consult/{cid}/actions/reject", **_form(zhao, reason=""))
    assert refused.status_code == 422
    assert "拒绝" in refused.text

    accepted = client.post(
        f"/consult/{cid}/actions/accept",
        **_form(zhao, consultant_id=demo.user("consult.zhao").id),
        follow_redirects=False,
    )
    assert accepted.status_code == 303, accepted.text
    started = client.post(f"/consult/{cid}/actions/start", headers=huang, follow_redirects=False)
    assert started.status_code == 303

    sent = client.post(
        f"/consult/{cid}/messages",
        **_form(zhao, body="请补充心电图"),
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert "请补充心电图" in client.get(f"/consult/{cid}", headers=huang).text

    # The report editor: the AI panel is labelled and never part of the form.
    editor = client.get(f"/consult/{cid}/report", headers=zhao)
    assert "AI 建议，非会诊意见" in editor.text
    form = editor.text.split('id="editor"', 1)[1].split("</form>", 1)[0]
    assert "ai-suggestions" not in form
    assert client.get(f"/consult/{cid}/report", headers=huang).text.count("<textarea") == 0

    assert 'id="set-pin"' in editor.text
    assert 'id="signing_pin_confirmation"' in form
    missing = client.post(f"/consult/{cid}/report", **_form(zhao, opinion=""))
    assert missing.status_code == 422
    unconfirmed = client.post(
        f"/consult/{cid}/report", **_form(zhao, opinion="建议行冠脉CTA", signing_pin="246810")
    )
    assert unconfirmed.status_code == 422
    assert "signing_pin_confirmation" in unconfirmed.text
    signed = client.post(
        f"/consult/{cid}/report",
        **_form(
            zhao,
            diagnosis="稳定型心绞痛",
            opinion="建议行冠脉CTA",
            signing_pin="246810",
            signing_pin_confirmation="246810",
        ),
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    report = client.get(f"/consult/{cid}/report", headers=huang)
    assert "签名有效" in report.text
    assert "建议行冠脉CTA" in report.text
    assert "<textarea" not in report.text  # read-only after signing

    editor = client.get(f"/consult/{cid}/report", headers=zhao).text
    assert 'id="signing_pin"' in editor
    assert 'id="set-pin"' not in editor  # the PIN is set: it is only asked for
    amendment = {"opinion": "建议行冠脉CTA及运动负荷试验", "reason": "补充", "amend": "1"}
    wrong = client.post(f"/consult/{cid}/report", **_form(zhao, **amendment, signing_pin="000000"))
    assert wrong.status_code == 422
    assert "签名PIN错误，还可尝试 4 次。" in wrong.text
    amended = client.post(
        f"/consult/{cid}/report", **_form(zhao, **amendment, signing_pin="246810"), follow_redirects=False
    )
    assert amended.status_code == 303, amended.text
    # Forgotten PIN: a new key under a new PIN, from the same form, with the login password; the earlier
    # versions stay valid.
    without_password = client.post(
        f"/consult/{cid}/report",
        **_form(
            zhao,
            **amendment,
            signing_pin="97531abc",
            signing_pin_confirmation="97531abc",
            new_signing_key="1",
        ),
    )
    assert without_password.status_code == 422
    assert "登录密码" in without_password.text
    renewed = client.post(
        f"/consult/{cid}/report",
        **_form(
            zhao,
            **{**amendment, "reason": "更换签名密钥后补充"},
            signing_pin="97531abc",
            signing_pin_confirmation="97531abc",
            new_signing_key="1",
            password=DEMO_PASSWORD,
        ),
        follow_redirects=False,
    )
    assert renewed.status_code == 303, renewed.text
    chain = client.get(f"/consult/{cid}/report", headers=huang).text
    assert "v3" in chain
    assert "v1" in chain
    assert "v2" in chain
    assert "补充" in chain

    decided = client.post(
        f"/consult/{cid}/decision",
        **_form(huang, decision="采纳意见，转诊"),
        follow_redirects=False,
    )
    assert decided.status_code == 303
    final = client.get(f"/consult/{cid}", headers=huang).text
    assert "采纳意见，转诊" in final
    assert "邀请方已采纳/处理" in final


def test_tampered_report_shows_invalid_signature(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    opinion = {"opinion": "建议保守治疗", "signing_pin": "246810", "signing_pin_confirmation": "246810"}
    assert client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=zhao).status_code == 201
    assert "签名有效" in client.get(f"/consult/{cid}", headers=huang).text
    with kernel.sessions() as session, session.begin():
        session.execute(
            update(OpinionVersion)
            .where(OpinionVersion.consultation_id == cid)
            .values(canonical_content=OpinionVersion.canonical_content.op("||")(" "))
        )
    page = client.get(f"/consult/{cid}/report", headers=huang).text
    assert "签名无效" in page
    assert "签名有效" not in page
    english = client.get(f"/consult/{cid}/report", headers={**huang, **EN}).text
    assert "Signature invalid" in english


def test_english_pages(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    home = client.get("/consult", headers={**huang, **EN})
    assert "My requests" in home.text
    assert "In progress" in home.text
    assert "我的申请" not in home.text
    assert "Case packet" in client.get(f"/consult/{cid}", headers={**zhao, **EN}).text
    assert "远程诊疗" in client.get("/consult", headers=huang).text


def test_case_packet_page_needs_consent_for_the_invited_side(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    packet = client.get(f"/consult/{cid}/packet", headers=zhao)
    assert packet.status_code == 200
    assert "76岁" in packet.text
    privacy = db.scalars(
        select(ConsultConsent).where(
            ConsultConsent.consultation_id == cid, ConsultConsent.kind == "patient-privacy"
        )
    ).one()
    db.commit()
    assert (
        client.post(
            f"{API}/consultations/{cid}/consents/{privacy.id}/withdraw", json={"reason": "x"}, headers=huang
        ).status_code
        == 200
    )
    refused = client.get(f"/consult/{cid}/packet", headers=zhao)
    assert refused.status_code == 403
    assert "76岁" not in refused.text


def test_trend_chart_spec() -> None:
    items = [{"kind": "trend", "vital": "heart_rate", "first": 80, "last": 90, "min": 70, "max": 120}]
    assert pages._trend_chart(items) == {
        "type": "range",
        "categories": ["heart_rate"],
        "first": [80],
        "last": [90],
        "min": [70],
        "max": [120],
    }
    series = [{"kind": "trend", "vital": "spo2", "series": [["2026-01-01T00:00:00", 97]]}]
    assert pages._trend_chart(series) == {
        "type": "series",
        "series": [{"name": "spo2", "data": [["2026-01-01T00:00:00", 97]]}],
    }
    assert pages._trend_chart([{"kind": "alarm"}]) is None


def test_live_stream_sends_new_messages_and_status_changes(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    cid, huang, zhao = _in_progress(client, db, demo)
    old = client.post(f"{API}/consultations/{cid}/messages", json={"body": "旧"}, headers=zhao)
    assert old.status_code == 201

    async def collect() -> list[str]:
        frames: list[str] = []
        stream = pages.events(kernel, cid, 1, lifetime_s=1.5, poll_s=0.05, heartbeat_s=0.5)
        async for frame in stream:
            frames.append(frame)
            if len(frames) == 2:  # the first poll has run: now something happens
                await asyncio.to_thread(
                    client.post, f"{API}/consultations/{cid}/messages", json={"body": "新消息"}, headers=huang
                )
                await asyncio.to_thread(
                    client.post,
                    f"{API}/consultations/{cid}/opinion",
                    json={"opinion": "建议", "signing_pin": "246810", "signing_pin_confirmation": "246810"},
                    headers=zhao,
                )
        return frames

    frames = asyncio.run(collect())
    messages = [json.loads(f.split("data: ", 1)[1]) for f in frames if "event: message" in f]
    assert [m["body"] for m in messages] == ["新消息"]  # the one already seen is not sent again
    assert messages[0]["author"] == "黄强"
    statuses = [json.loads(f.split("data: ", 1)[1]) for f in frames if "event: status" in f]
    assert statuses
    assert statuses[-1]["status"] == "completed"
    assert any(f.startswith(": keep-alive") for f in frames)


@pytest.mark.parametrize("path", ["/consult/new", "/consult"])
def test_consultant_cannot_start_a_request(
    client: TestClient, db: Session, demo: Demo, network: None, path: str
) -> None:
    zhao = issue_token(db, "consult.zhao")
    response = client.get(path, headers=zhao)
    if path == "/consult/new":
        assert response.status_code == 403
    else:
        assert response.status_code == 200
        assert 'id="new-request"' not in response.text


def test_case_packet_shows_what_the_modules_contribute(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    from datetime import datetime, timedelta

    from tianfu.core.db import utcnow
    from tianfu.imaging.findings import ImagingFinding
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy
    from tianfu.monitoring.tables import AlarmEpisode, VitalSample

    cid, _huang, zhao = _in_progress(client, db, demo)
    patient_id = demo.patient("黄玉珍").id
    now = utcnow()
    with kernel.sessions() as session, session.begin():
        for minutes, heart_rate in ((120, 88.0), (60, 112.0), (5, 96.0)):
            session.add(
                VitalSample(
                    patient_id=patient_id,
                    observed_at=now - timedelta(minutes=minutes),
                    heart_rate=heart_rate,
                    spo2=95.0,
                    temperature=37.6,
                )
            )
        session.add(
            AlarmEpisode(
                id="consult-page-alarm",
                patient_id=patient_id,
                condition="heart_rate_high",
                kind="physiological",
                priority="medium",
                state="cleared",
                message="心率过快 112",
                value=112.0,
                raised_at=now - timedelta(minutes=60),
            )
        )
        study = ImagingStudy(
            study_instance_uid="1.2.826.0.1.3680043.8.498.99",
            organization_id=demo.organization("JJSQ").id,
            patient_id=patient_id,
            description="胸部正位片",
            modalities="DX",
        )
        session.add(study)
        session.flush()
        series = ImagingSeries(series_instance_uid="1.2.826.0.1.3680043.8.498.99.1", study_id=study.id)
        session.add(series)
        session.flush()
        instance = ImagingInstance(
            sop_instance_uid="1.2.826.0.1.3680043.8.498.99.1.1",
            series_id=series.id,
            source="c-store",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            storage_path="consult/test.dcm",
            size_bytes=0,
            sha256="0" * 64,
        )
        session.add(instance)
        session.flush()
        session.add(
            ImagingFinding(
                study_id=study.id,
                instance_id=instance.id,
                task="pneumonia",
                model_version="1.0.0",
                label="pneumonia",
                probability=0.91,
                score=0.91,
                threshold=0.79,
                positive=True,
                probabilities={"pneumonia": 0.91, "normal": 0.09},
            )
        )
    page = client.get(f"/consult/{cid}/packet", headers=zhao)
    assert page.status_code == 200, page.text
    assert 'data-module="monitoring"' in page.text
    assert 'data-module="imaging"' in page.text
    assert "心率过快 112" in page.text
    assert "胸部正位片" in page.text
    # The AI's reading of the radiograph is there, and marked as an AI suggestion, not an opinion.
    imaging = page.text.split('data-module="imaging"', 1)[1]
    assert "AI 建议，非会诊意见" in imaging
    assert "91%" in imaging
    chart = json.loads(page.text.split('id="vitals-data">', 1)[1].split("</script>", 1)[0])
    # The chart draws each sign's hourly means, as the database averaged them.
    assert chart["type"] == "series"
    heart = next(s["data"] for s in chart["series"] if s["name"] == "heart_rate")
    hours: dict[str, list[float]] = {}
    for minutes, heart_rate in ((120, 88.0), (60, 112.0), (5, 96.0)):
        hour = (now - timedelta(minutes=minutes)).replace(minute=0, second=0, microsecond=0)
        hours.setdefault(hour.isoformat(), []).append(heart_rate)
    expected = [[h, round(sum(v) / len(v), 1)] for h, v in sorted(hours.items())]
    assert [[datetime.fromisoformat(t).isoformat(), v] for t, v in heart] == expected
    assert "/imaging/studies/" in page.text


def test_live_stream_sends_a_message_that_committed_late(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    """On PostgreSQL a message stamped earlier can commit after a later one was pushed: still sent."""
    from datetime import timedelta

    from tianfu.consult.tables import ConsultMessage
    from tianfu.core.db import utcnow

    cid, huang, _zhao = _in_progress(client, db, demo)
    author = demo.user("dr.huang")

    async def collect() -> list[str]:
        frames: list[str] = []
        stream = pages.events(kernel, cid, 0, lifetime_s=1.0, poll_s=0.05, heartbeat_s=5)
        async for frame in stream:
            frames.append(frame)
            if len(frames) == 1:
                await asyncio.to_thread(
                    client.post,
                    f"{API}/consultations/{cid}/messages",
                    json={"body": "后发先至"},
                    headers=huang,
                )
            if "后发先至" in frame:
                with kernel.sessions() as session, session.begin():
                    session.add(
                        ConsultMessage(
                            consultation_id=cid,
                            author_id=author.id,
                            author_institution_id=author.organization_id,
                            body="先发后至",
                            sent_at=utcnow() - timedelta(seconds=5),
                        )
                    )
        return frames

    frames = asyncio.run(collect())
    bodies = [json.loads(f.split("data: ", 1)[1])["body"] for f in frames if "event: message" in f]
    assert bodies == ["后发先至", "先发后至"]
