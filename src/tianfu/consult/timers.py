"""Response-deadline timers (TC-04): remind the invited side, then escalate, each exactly once.

:func:`due_notices` decides, from the workflow's :func:`~tianfu.consult.workflow.response_schedule`, the
time and what was already sent, which notices are due: pure, tested with times. :func:`sweep` applies it to
every open consultation: it records each notice in ``consult_deadline_notice`` (unique per consultation,
stage and kind, so a notice is never sent twice, even by two workers racing), publishes
``tianfu.consult.deadline.reminder`` / ``tianfu.consult.deadline.escalated`` through the outbox, and
audits, all in one transaction. :func:`start_deadline_timers` runs the sweep every
``TIANFU_CONSULT_TIMER_INTERVAL_S`` seconds in the server or worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tianfu.consult import workflow as wf
from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow

if TYPE_CHECKING:
    from tianfu.core.kernel import Kernel

log = logging.getLogger(__name__)
TIMER_ACTOR = Actor(user_id=None, username="consult-deadline-timer", role="system")


class ConsultSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIANFU_CONSULT_", env_file=".env", extra="ignore")

    timer_interval_s: int = Field(60, ge=1, description="How often response deadlines are checked.")
    signature_algorithm: Literal["ecdsa-p256-sha256", "sm2-sm3"] = Field(
        "ecdsa-p256-sha256",
        description="The algorithm of NEW signing keys; records keep verifying under the one they name.",
    )

    @model_validator(mode="after")
    def _sm2_installed(self) -> ConsultSettings:
        from tianfu.consult import sm2

        if self.signature_algorithm == "sm2-sm3" and not sm2.available():
            raise ValueError(
                "TIANFU_CONSULT_SIGNATURE_ALGORITHM=sm2-sm3 needs the gmssl package: "
                "pip install 'tianfu[sm2]'"
            )
        return self


@lru_cache
def get_consult_settings() -> ConsultSettings:
    return ConsultSettings()


class NoticeKind(StrEnum):
    REMINDER = "reminder"  # a share of the response window has passed
    ESCALATION = "escalation"  # the deadline (plus the policy's grace) has passed

    @property
    def subject(self) -> str:
        return "tianfu.consult.deadline." + ("reminder" if self is NoticeKind.REMINDER else "escalated")


@dataclass(frozen=True)
class DueNotice:
    stage: wf.SlaStage
    kind: NoticeKind
    due_at: datetime  # the response deadline the notice is about


def due_notices(
    schedule: wf.SlaSchedule | None,
    now: datetime,
    sent: Iterable[tuple[str, str]] = (),
) -> list[DueNotice]:
    """The notices to send now. ``sent`` holds (stage, kind) pairs already sent for this consultation.

    Nothing when no response is owed. Once escalation is due, a reminder not yet sent is skipped: it
    would arrive after the deadline, telling less than the escalation does.
    """
    if schedule is None:
        return []
    already = {(str(stage), str(kind)) for stage, kind in sent}
    state = schedule.state(now)

    def fresh(kind: NoticeKind) -> bool:
        return (schedule.stage.value, kind.value) not in already

    if state is wf.SlaState.ESCALATION_DUE:
        return (
            [DueNotice(schedule.stage, NoticeKind.ESCALATION, schedule.deadline)]
            if fresh(NoticeKind.ESCALATION)
            else []
        )
    if state in (wf.SlaState.REMINDER_DUE, wf.SlaState.OVERDUE) and fresh(NoticeKind.REMINDER):
        return [DueNotice(schedule.stage, NoticeKind.REMINDER, schedule.deadline)]
    return []


OPEN_FOR_TIMERS = (wf.TaskStatus.REQUESTED.value, wf.TaskStatus.RECEIVED.value)


def sweep(session: Session, audit: AuditLog, now: datetime | None = None) -> list[DueNotice]:
    """Record, publish and audit every due notice of every open consultation (the caller commits)."""
    from tianfu.consult.service import snapshot
    from tianfu.consult.tables import Consultation, ConsultDeadlineNotice

    now = now or utcnow()
    sent_all: list[DueNotice] = []
    rows = session.scalars(
        select(Consultation).where(
            Consultation.status.in_(OPEN_FOR_TIMERS),
            Consultation.response_remind_at.is_not(None),
            Consultation.response_remind_at <= now,
        )
    ).all()
    for row in rows:
        sent = session.execute(
            select(ConsultDeadlineNotice.stage, ConsultDeadlineNotice.kind).where(
                ConsultDeadlineNotice.consultation_id == row.id
            )
        ).all()
        schedule = wf.response_schedule(snapshot(session, row))
        for notice in due_notices(schedule, now, [(s, k) for s, k in sent]):
            try:
                with session.begin_nested():
                    session.add(
                        ConsultDeadlineNotice(
                            consultation_id=row.id,
                            stage=notice.stage.value,
                            kind=notice.kind.value,
                            due_at=notice.due_at,
                            sent_at=now,
                        )
                    )
            except IntegrityError:  # another worker sent it first
                continue
            data = {
                "consultation_id": row.id,
                "stage": notice.stage.value,
                "kind": notice.kind.value,
                "due_at": notice.due_at.isoformat(),
                "status": row.status,
                "priority": row.priority,
                "inviting_institution_id": row.inviting_institution_id,
                "invited_institution_id": row.invited_institution_id,
                "requester_id": row.requester_id,
            }
            enqueue(session, notice.kind.subject, data)
            audit.record(
                session,
                actor=TIMER_ACTOR,
                action=f"consult.deadline.{notice.kind.value}",
                action_type="C",
                resource_type="Consultation",
                resource_id=row.id,
                patient_ids=[row.patient_id],
                purpose="HOPERAT",
                detail={"stage": notice.stage.value, "due_at": notice.due_at.isoformat()},
            )
            sent_all.append(notice)
    return sent_all


async def start_deadline_timers(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """Sweeps every TIANFU_CONSULT_TIMER_INTERVAL_S seconds; returns the stopper."""
    interval = get_consult_settings().timer_interval_s

    def run_once() -> None:
        with kernel.sessions() as session, session.begin():
            notices = sweep(session, kernel.audit)
        if notices:
            log.info("consultation deadline notices sent: %d", len(notices))

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(run_once)
            except Exception:  # a failed sweep must not stop the next one
                log.exception("consultation deadline sweep failed")

    task = asyncio.create_task(loop(), name="consult-deadline-timers")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
