"""Events leave through the transactional outbox: published after commit, in order, at least once."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tests.core.test_bus import _wait_for
from tianfu.core.bus import Event
from tianfu.core.bus.idempotency import claim
from tianfu.core.bus.models import OutboxEvent, ProcessedEvent
from tianfu.core.bus.outbox import enqueue
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings


async def _collect(kernel: Kernel, subject_filter: str) -> list[Event]:
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    await kernel.bus.subscribe(subject_filter, f"test-{uuid.uuid4().hex[:6]}", handler)
    return seen


async def test_rolled_back_changes_publish_nothing(kernel: Kernel) -> None:
    await kernel.start()
    try:
        seen = await _collect(kernel, "tianfu.>")
        with kernel.sessions() as session:
            enqueue(session, "tianfu.test.never", {"x": 1})
            session.rollback()
        with kernel.sessions() as session:
            enqueue(session, "tianfu.test.kept", {"x": 2})
            session.commit()
        await _wait_for(lambda: len(seen) == 1)
        await asyncio.sleep(0.1)
        assert [e.subject for e in seen] == ["tianfu.test.kept"]
    finally:
        await kernel.stop()


async def test_admission_is_announced_on_the_bus(kernel: Kernel, demo: Demo, db: Session) -> None:
    from tianfu.core.patients import service

    await kernel.start()
    try:
        seen = await _collect(kernel, "tianfu.encounter.*")
        nurse = principal(db, "nurse.wang")
        patient_id = demo.patient("吴海燕").id
        encounter = service.admit(
            db, kernel.audit, nurse, patient_id, ward_id=demo.ward("CARD1").id, bed_id=demo.bed("CARD1-12").id
        )
        db.commit()
        await _wait_for(lambda: len(seen) == 1)
        event = seen[0]
        assert event.subject == "tianfu.encounter.admitted"
        assert event.data["patient_id"] == patient_id
        assert event.data["bed_id"] == demo.bed("CARD1-12").id
        assert event.id == db.scalar(select(OutboxEvent.id).where(OutboxEvent.subject == event.subject))
        assert encounter.id == event.data["encounter_id"]
        db.commit()  # end the read: on SQLite an open transaction would block the relay's final flush
    finally:
        await kernel.stop()


async def test_events_committed_while_the_bus_was_down_go_out_on_start(kernel: Kernel) -> None:
    with kernel.sessions() as session:
        for i in range(3):
            enqueue(session, "tianfu.test.queued", {"i": i})
        session.commit()
    await kernel.start()
    try:
        seen = await _collect(kernel, "tianfu.test.*")
        await _wait_for(lambda: len(seen) == 3)
        assert [e.data["i"] for e in seen] == [0, 1, 2]
        with kernel.sessions() as session:
            assert (
                session.scalar(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                )
                == 0
            )
    finally:
        await kernel.stop()


def test_idempotent_consumer_applies_an_event_once(db: Session) -> None:
    event = Event(subject="tianfu.test.x", data={})
    assert claim(db, "census", event)
    db.commit()
    assert not claim(db, "census", event)
    assert claim(db, "other-consumer", event)
    db.commit()
    assert db.scalar(select(func.count()).select_from(ProcessedEvent)) == 2


async def test_poison_event_is_kept_in_the_dead_letter_store(kernel: Kernel) -> None:
    await kernel.start()
    try:

        async def broken(event: Event) -> None:
            raise KeyError("bed_id")

        await kernel.bus.subscribe("tianfu.test.*", "broken-consumer", broken, max_deliver=2)
        await kernel.bus.publish("tianfu.test.poison", {"bed": "?"})

        def stored() -> int:
            with kernel.sessions() as session:
                return session.scalar(select(func.count()).select_from(DeadLetter)) or 0

        await _wait_for(lambda: stored() == 1)
        with kernel.sessions() as session:
            row = session.scalars(select(DeadLetter)).one()
            assert row.source == "bus"
            assert row.meta["consumer"] == "broken-consumer"
            assert "KeyError" in row.reason
            assert Event.from_bytes(row.payload.encode()).data == {"bed": "?"}
    finally:
        await kernel.stop()


async def test_kernel_outbox_over_nats(nats_url: str, settings: Settings) -> None:
    """The scale-out configuration: outbox relay publishing to JetStream, a consumer in another process."""
    from tianfu.core.bus.nats import NatsJetStreamBus

    stream = f"TEST_{uuid.uuid4().hex[:10].upper()}"
    kernel = Kernel(
        settings.model_copy(
            update={"bus_url": nats_url, "bus_stream": stream, "bus_namespace": stream.lower()}
        )
    )
    await kernel.start()
    worker = NatsJetStreamBus(nats_url, stream=stream, namespace=stream.lower())
    await worker.start()
    try:
        seen: list[Event] = []

        async def handler(event: Event) -> None:
            seen.append(event)

        await worker.subscribe("tianfu.encounter.*", "census-worker", handler)
        with kernel.sessions() as session:
            enqueue(session, "tianfu.encounter.admitted", {"n": 1})
            session.commit()
        await _wait_for(lambda: len(seen) == 1)
        assert seen[0].data == {"n": 1}
        assert seen[0].subject == "tianfu.encounter.admitted"  # the namespace stays on the server
    finally:
        await worker.close()
        assert isinstance(kernel.bus, NatsJetStreamBus)
        await kernel.bus.delete_stream()
        await kernel.stop()


async def test_an_event_the_bus_keeps_refusing_goes_to_dead_letters(kernel: Kernel) -> None:
    from tianfu.core.bus.outbox import MAX_ATTEMPTS

    original = kernel.bus.publish_event

    async def refuse_big(event: Event) -> None:
        if event.data.get("big"):
            raise ValueError("maximum payload exceeded")
        await original(event)

    kernel.bus.publish_event = refuse_big  # type: ignore[method-assign]
    with kernel.sessions() as session:
        enqueue(session, "tianfu.test.big", {"big": True})
        enqueue(session, "tianfu.test.small", {"big": False})
        session.commit()
    await kernel.bus.start()
    published = 0
    for _ in range(MAX_ATTEMPTS + 1):
        published += await kernel.outbox.flush()
    assert published == 1  # the small event got through once the big one was set aside
    with kernel.sessions() as session:
        row = session.scalars(select(DeadLetter)).one()
        assert row.source == "outbox"
        assert "maximum payload exceeded" in row.reason
        pending = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        assert session.scalar(pending) == 0
    await kernel.bus.close()
