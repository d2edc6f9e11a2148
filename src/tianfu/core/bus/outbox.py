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

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from tianfu.core.bus import Event, EventBus, validate_subject
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.db import new_id, utcnow
from tianfu.core.deadletter import service as deadletters

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 20  # then the event goes to the dead-letter store
RELAY_LOCK_KEY = 0x7469616E6675  # "tianfu": the advisory lock that lets one relay publish at a time


def enqueue(session: Session, subject: str, data: dict[str, Any]) -> OutboxEvent:
    validate_subject(subject)
    row = OutboxEvent(subject=subject, data=data)
    session.add(row)
    session.info["outbox_pending"] = True
    return row


def enqueue_many(session: Session, subject: str, datas: list[dict[str, Any]]) -> None:
    """:func:`enqueue` for many events on one subject, in one executemany (published in this order)."""
    validate_subject(subject)
    if not datas:
        return
    now = utcnow()
    session.execute(
        insert(OutboxEvent),
        [
            {"id": new_id(), "subject": subject, "data": data, "created_at": now, "attempts": 0}
            for data in datas
        ],
    )
    session.info["outbox_pending"] = True


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
        """Publish pending events in insertion order; returns how many were published.

        On PostgreSQL several processes run a relay; an advisory lock lets one of them publish at a time
        (the others find the lock taken and wait for their next turn), which keeps the order.
        """
        lock = await asyncio.to_thread(self._try_lock)
        if lock is False:
            return 0
        try:
            return await self._flush(batch)
        finally:
            if lock is not True:
                await asyncio.to_thread(self._unlock, lock)

    async def _flush(self, batch: int) -> int:
        published = 0
        while True:
            rows = await asyncio.to_thread(self._claim, batch)
            if not rows:
                return published
            done: list[int] = []
            failure: tuple[int, str, int] | None = None
            for seq, event_id, subject, data, created_at, attempts in rows:
                try:
                    await self._bus.publish_event(
                        Event(subject=subject, data=data, id=event_id, occurred_at=created_at)
                    )
                    done.append(seq)
                except Exception as exc:
                    failure = (seq, f"{type(exc).__name__}: {exc}", attempts)
                    break  # keep order: later events wait for this one
            await asyncio.to_thread(self._mark, done, failure)
            published += len(done)
            if failure is not None:
                return published

    def _try_lock(self) -> Any:
        """True where no lock is needed (SQLite: one process), a connection holding the lock, or False."""
        engine = self._sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            return True
        connection = engine.connect()
        if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}).scalar():
            connection.commit()
            return connection
        connection.close()
        return False

    @staticmethod
    def _unlock(connection: Any) -> None:
        # Session-level advisory locks outlive a pooled connection's "close": release explicitly.
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY})
        connection.commit()
        connection.close()

    def _claim(self, batch: int) -> list[tuple[int, str, str, dict[str, Any], Any, int]]:
        with self._sessions() as session:
            query = (
                select(
                    OutboxEvent.seq,
                    OutboxEvent.id,
                    OutboxEvent.subject,
                    OutboxEvent.data,
                    OutboxEvent.created_at,
                    OutboxEvent.attempts,
                )
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.seq)
                .limit(batch)
            )
            return [tuple(row) for row in session.execute(query)]

    def _mark(self, done: list[int], failure: tuple[int, str, int] | None) -> None:
        with self._sessions() as session, session.begin():
            now = utcnow()
            if done:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.seq.in_(done))
                    .values(published_at=now, attempts=OutboxEvent.attempts + 1)
                )
            if failure is None:
                return
            seq, error, attempts = failure
            row = session.get(OutboxEvent, seq)
            if row is None:
                return
            row.attempts = attempts + 1
            row.last_error = error[:2000]
            if row.attempts >= MAX_ATTEMPTS:
                # An event the bus keeps refusing (too large, say) must not hold back every later one.
                deadletters.store(
                    session,
                    source="outbox",
                    reason=f"not publishable after {row.attempts} attempts: {error}",
                    payload=Event(
                        subject=row.subject, data=row.data, id=row.id, occurred_at=row.created_at
                    ).to_bytes(),
                    meta={"subject": row.subject, "event_id": row.id},
                )
                row.published_at = now
