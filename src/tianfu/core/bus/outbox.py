"""Transactional outbox: services write events with their changes; a relay publishes them.

A request handler is synchronous and runs in a thread; the bus is asynchronous. Writing the event to
the ``outbox_event`` table in the same transaction means an event is published if and only if the
change committed, and a crash between commit and publish only delays it. The event id is the outbox
row id, which JetStream uses to drop duplicates if the relay publishes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tianfu.core.bus import Event, EventBus, validate_subject
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.db import utcnow

log = logging.getLogger(__name__)


def enqueue(session: Session, subject: str, data: dict[str, Any]) -> OutboxEvent:
    validate_subject(subject)
    row = OutboxEvent(subject=subject, data=data)
    session.add(row)
    session.info["outbox_pending"] = True
    return row


class OutboxRelay:
    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, *, poll_s: float = 0.5) -> None:
        self._sessions = sessions
        self._bus = bus
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Wake the relay now (safe from any thread), instead of at the next poll."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()  # publish whatever committed before shutdown

    async def _run(self) -> None:
        while True:
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()

    async def flush(self, batch: int = 200) -> int:
        """Publish pending events in commit order; returns how many were published."""
        published = 0
        while True:
            rows = await asyncio.to_thread(self._claim, batch)
            if not rows:
                return published
            done: list[str] = []
            error: tuple[str, str] | None = None
            for row_id, subject, data, created_at in rows:
                try:
                    await self._bus.publish_event(
                        Event(subject=subject, data=data, id=row_id, occurred_at=created_at)
                    )
                    done.append(row_id)
                except Exception as exc:
                    error = (row_id, f"{type(exc).__name__}: {exc}")
                    break  # keep order: later events wait for this one
            await asyncio.to_thread(self._mark, done, error)
            published += len(done)
            if error is not None:
                return published

    def _claim(self, batch: int) -> list[tuple[str, str, dict[str, Any], Any]]:
        with self._sessions() as session:
            query = (
                select(OutboxEvent.id, OutboxEvent.subject, OutboxEvent.data, OutboxEvent.created_at)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
                .limit(batch)
            )
            return [tuple(row) for row in session.execute(query)]

    def _mark(self, done: list[str], error: tuple[str, str] | None) -> None:
        with self._sessions() as session, session.begin():
            if done:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(done))
                    .values(published_at=utcnow(), attempts=OutboxEvent.attempts + 1)
                )
            if error is not None:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id == error[0])
                    .values(attempts=OutboxEvent.attempts + 1, last_error=error[1][:2000])
                )
