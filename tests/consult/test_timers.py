"""Response-deadline timers (TC-04): what is due (pure, with times) and the sweep that sends it once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tests.consult.test_api import _act, _consent, _draft
from tianfu.consult import workflow as wf
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.tables import ConsultDeadlineNotice
from tianfu.consult.timers import NoticeKind, due_notices, get_consult_settings, start_deadline_timers, sweep
from tianfu.core.audit.models import AuditRecord
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.kernel import Kernel

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SCHEDULE = wf.SlaSchedule(
    stage=wf.SlaStage.DECIDE,
    started_at=T0,
    remind_at=T0 + timedelta(hours=2),
    deadline=T0 + timedelta(hours=4),
    escalate_at=T0 + timedelta(hours=5),
)


def test_nothing_before_the_reminder_or_without_a_schedule() -> None:
    assert due_notices(SCHEDULE, T0 + timedelta(hours=1, minutes=59)) == []
    assert due_notices(None, T0 + timedelta(days=30)) == []


def test_the_reminder_at_its_time_and_until_escalation() -> None:
    for at in (T0 + timedelta(hours=2), T0 + timedelta(hours=4), T0 + timedelta(hours=4, minutes=59)):
        notices = due_notices(SCHEDULE, at)
        assert [(n.stage, n.kind) for n in notices] == [(wf.SlaStage.DECIDE, NoticeKind.REMINDER)]
        assert notices[0].due_at == SCHEDULE.deadline


def test_each_notice_once() -> None:
    sent = [("decide", "reminder")]
    assert due_notices(SCHEDULE, T0 + timedelta(hours=3), sent) == []
    escalation = due_notices(SCHEDULE, T0 + timedelta(hours=5), sent)
    assert [n.kind for n in escalation] == [NoticeKind.ESCALATION]
    assert due_notices(SCHEDULE, T0 + timedelta(hours=9), [*sent, ("decide", "escalation")]) == []


def test_a_late_sweep_escalates_without_a_stale_reminder() -> None:
    assert [n.kind for n in due_notices(SCHEDULE, T0 + timedelta(hours=6))] == [NoticeKind.ESCALATION]


def test_a_new_stage_is_a_new_clock() -> None:
    """Notices of the acknowledge stage do not count for the decide stage."""
    sent = [("acknowledge", "reminder"), ("acknowledge", "escalation")]
    assert [n.kind for n in due_notices(SCHEDULE, T0 + timedelta(hours=2), sent)] == [NoticeKind.REMINDER]


def test_subjects() -> None:
    assert NoticeKind.REMINDER.subject == "tianfu.consult.deadline.reminder"
    assert NoticeKind.ESCALATION.subject == "tianfu.consult.deadline.escalated"


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def _submitted(client: TestClient, db: Session, demo: Demo) -> tuple[str, datetime, datetime]:
    cid, huang = _draft(client, db, demo)
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    submitted = _act(client, cid, "submit", huang).json()
    submitted_at = datetime.fromisoformat(submitted["submitted_at"])
    return cid, submitted_at, datetime.fromisoformat(submitted["response_due_at"])


def _notices(kernel: Kernel, cid: str) -> list[tuple[str, str]]:
    with kernel.sessions() as session:
        return [
            (n.stage, n.kind)
            for n in session.scalars(
                select(ConsultDeadlineNotice)
                .where(ConsultDeadlineNotice.consultation_id == cid)
                .order_by(ConsultDeadlineNotice.sent_at)
            )
        ]


def test_sweep_records_publishes_and_audits_once(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    cid, submitted_at, due = _submitted(client, db, demo)
    halfway = submitted_at + (due - submitted_at) / 2
    with kernel.sessions() as session, session.begin():
        assert sweep(session, kernel.audit, now=halfway - timedelta(seconds=1)) == []
    for _ in range(2):  # the second sweep finds the reminder sent
        with kernel.sessions() as session, session.begin():
            sweep(session, kernel.audit, now=halfway + timedelta(seconds=1))
    assert _notices(kernel, cid) == [("acknowledge", "reminder")]
    with kernel.sessions() as session, session.begin():
        sent = sweep(session, kernel.audit, now=due + timedelta(minutes=1))
    assert [(n.stage.value, n.kind.value) for n in sent] == [("acknowledge", "escalation")]
    assert _notices(kernel, cid) == [("acknowledge", "reminder"), ("acknowledge", "escalation")]
    with kernel.sessions() as session:
        subjects = [
            e.subject
            for e in session.scalars(select(OutboxEvent))
            if e.data.get("consultation_id") == cid and ".deadline." in e.subject
        ]
        audited = list(
            session.scalars(
                select(AuditRecord.action).where(
                    AuditRecord.resource_id == cid, AuditRecord.action.like("consult.deadline.%")
                )
            )
        )
    assert sorted(subjects) == ["tianfu.consult.deadline.escalated", "tianfu.consult.deadline.reminder"]
    assert sorted(audited) == ["consult.deadline.escalation", "consult.deadline.reminder"]


def test_receiving_starts_the_decide_stage_and_answering_stops_it(
    client: TestClient, db: Session, demo: Demo, network: None, kernel: Kernel
) -> None:
    cid, _, _due = _submitted(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    received = _act(client, cid, "receive", zhao).json()
    assert received["response_stage"] == "decide"
    decide_due = datetime.fromisoformat(received["response_due_at"])
    with kernel.sessions() as session, session.begin():
        sent = sweep(session, kernel.audit, now=decide_due + timedelta(seconds=1))
    assert [(n.stage.value, n.kind.value) for n in sent] == [("decide", "escalation")]
    assert _act(client, cid, "accept", zhao).status_code == 200
    with kernel.sessions() as session, session.begin():
        assert sweep(session, kernel.audit, now=decide_due + timedelta(days=3)) == []


def test_the_service_loop_sweeps_and_stops(
    client: TestClient,
    db: Session,
    demo: Demo,
    network: None,
    kernel: Kernel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid, _, due = _submitted(client, db, demo)
    monkeypatch.setenv("TIANFU_CONSULT_TIMER_INTERVAL_S", "1")
    get_consult_settings.cache_clear()
    monkeypatch.setattr("tianfu.consult.timers.utcnow", lambda: due + timedelta(minutes=1))

    async def run() -> None:
        stop = await start_deadline_timers(kernel)
        for _ in range(60):
            await asyncio.sleep(0.1)
            if _notices(kernel, cid):
                break
        await stop()

    try:
        asyncio.run(run())
    finally:
        get_consult_settings.cache_clear()
    assert _notices(kernel, cid) == [("acknowledge", "escalation")]
