"""Both event-bus implementations keep the same contract: at-least-once, durable, dead-lettered.

The same tests run against the in-process bus and against NATS JetStream (on a throw-away stream).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tianfu.core.bus import Event, EventBus, subject_matches, validate_subject
from tianfu.core.bus.memory import InProcessBus
from tianfu.core.bus.nats import NatsJetStreamBus


@pytest.fixture(params=["memory", "nats"])
def bus_factory(request: pytest.FixtureRequest) -> Callable[[], EventBus]:
    if request.param == "memory":
        return lambda: InProcessBus(retry_delay_s=0.01)
    url = request.getfixturevalue("nats_url")
    stream = f"TEST_{uuid.uuid4().hex[:10].upper()}"
    return lambda: NatsJetStreamBus(url, stream=stream, namespace=stream.lower())


@pytest.fixture
async def bus(bus_factory: Callable[[], EventBus]) -> AsyncIterator[EventBus]:
    bus = bus_factory()
    await bus.start()
    yield bus
    if isinstance(bus, NatsJetStreamBus):
        await bus.delete_stream()
    await bus.close()


def _subject(bus: EventBus, event: str) -> str:
    return f"tianfu.test.{event}"


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_publish_then_durable_subscriber_receives_in_order(bus: EventBus) -> None:
    subject = _subject(bus, "observation.bed1")
    for i in range(5):
        await bus.publish(subject, {"i": i})
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.data["i"])

    subscription = await bus.subscribe(_subject(bus, ">"), "reader", handler)
    await _wait_for(lambda: len(seen) == 5)
    assert seen == [0, 1, 2, 3, 4]
    await subscription.stop()


async def test_failing_handler_gets_the_event_again(bus: EventBus) -> None:
    deliveries: list[int] = []

    async def flaky(event: Event) -> None:
        deliveries.append(event.delivery)
        if event.delivery < 3:
            raise RuntimeError("database briefly unavailable")

    subscription = await bus.subscribe(_subject(bus, "*"), "flaky", flaky, max_deliver=5)
    await bus.publish(_subject(bus, "thing"), {"x": 1})
    await _wait_for(lambda: deliveries[-1:] == [3])
    assert deliveries == [1, 2, 3]
    await subscription.stop()


async def test_poison_event_goes_to_the_dead_letter_sink(bus: EventBus) -> None:
    dead: list[tuple[str, str, str]] = []

    async def sink(event: Event, consumer: str, error: str) -> None:
        dead.append((event.data["id"], consumer, error))

    bus.dead_letter_sink = sink
    processed: list[str] = []

    async def handler(event: Event) -> None:
        if event.data["id"] == "bad":
            raise ValueError("cannot parse")
        processed.append(event.data["id"])

    subscription = await bus.subscribe(_subject(bus, "*"), "strict", handler, max_deliver=2)
    await bus.publish(_subject(bus, "thing"), {"id": "bad"})
    await bus.publish(_subject(bus, "thing"), {"id": "good"})
    await _wait_for(lambda: processed == ["good"] and len(dead) == 1)
    assert dead == [("bad", "strict", "ValueError: cannot parse")]
    await subscription.stop()


async def test_two_durable_consumers_each_get_every_event(bus: EventBus) -> None:
    a: list[str] = []
    b: list[str] = []

    async def to_a(event: Event) -> None:
        a.append(event.id)

    async def to_b(event: Event) -> None:
        b.append(event.id)

    sub_a = await bus.subscribe(_subject(bus, ">"), "alarms", to_a)
    sub_b = await bus.subscribe(_subject(bus, ">"), "scores", to_b)
    published = [(await bus.publish(_subject(bus, "x"), {})).id for _ in range(3)]
    await _wait_for(lambda: len(a) == 3 and len(b) == 3)
    assert a == published
    assert b == published
    await sub_a.stop()
    await sub_b.stop()


async def test_event_round_trips_through_bytes() -> None:
    event = Event(subject="tianfu.x.y", data={"名字": "王丽", "n": 1})
    again = Event.from_bytes(event.to_bytes(), delivery=2)
    assert (again.id, again.subject, again.data, again.occurred_at, again.delivery) == (
        event.id,
        event.subject,
        event.data,
        event.occurred_at,
        2,
    )


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("tianfu.>", "tianfu.a.b", True),
        ("tianfu.*.b", "tianfu.a.b", True),
        ("tianfu.*", "tianfu.a.b", False),
        ("tianfu.a.b", "tianfu.a.b", True),
        ("tianfu.a.b", "tianfu.a.c", False),
        ("tianfu.a.>", "tianfu.a", False),
    ],
)
def test_subject_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@pytest.mark.parametrize("subject", ["other.a.b", "tianfu.a", "tianfu.a.*", "tianfu..b", "tianfu.a b.c"])
def test_invalid_subjects_are_refused(subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        validate_subject(subject)


async def test_nats_durable_consumer_resumes_where_it_left_off(nats_url: str) -> None:
    """A worker that restarts (new connection, same durable name) gets only what it has not acknowledged."""
    stream = f"TEST_{uuid.uuid4().hex[:10].upper()}"
    subjects = "tianfu.test.>"
    subject = "tianfu.test.vitals"
    first = NatsJetStreamBus(nats_url, stream=stream, namespace=stream.lower())
    await first.start()
    try:
        seen: list[int] = []

        async def handler(event: Event) -> None:
            seen.append(event.data["n"])

        subscription = await first.subscribe(subjects, "worker", handler)
        await first.publish(subject, {"n": 1})
        await _wait_for(lambda: seen == [1])
        await subscription.stop()
        await first.publish(subject, {"n": 2})
        await first.publish(subject, {"n": 2}, event_id="fixed-id")
        await first.publish(subject, {"n": 2}, event_id="fixed-id")  # a retried publish: stored once

        second = NatsJetStreamBus(nats_url, stream=stream, namespace=stream.lower())
        await second.start()
        resumed: list[int] = []

        async def handler2(event: Event) -> None:
            resumed.append(event.data["n"])

        subscription2 = await second.subscribe(subjects, "worker", handler2)
        await _wait_for(lambda: len(resumed) == 2)
        await asyncio.sleep(0.3)
        assert resumed == [2, 2]
        await subscription2.stop()
        await second.close()
    finally:
        await first.delete_stream()
        await first.close()


async def test_a_broken_dead_letter_store_does_not_stop_the_consumer() -> None:
    bus = InProcessBus(retry_delay_s=0.005)
    await bus.start()
    attempts = 0

    async def flaky_sink(event: Event, consumer: str, error: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("database is locked")

    bus.dead_letter_sink = flaky_sink
    handled: list[str] = []

    async def handler(event: Event) -> None:
        if event.data["id"] == "poison":
            raise ValueError("bad")
        handled.append(event.data["id"])

    await bus.subscribe("tianfu.test.*", "consumer", handler, max_deliver=1)
    await bus.publish("tianfu.test.x", {"id": "poison"})
    await bus.publish("tianfu.test.x", {"id": "after"})
    await _wait_for(lambda: handled == ["after"])
    assert attempts == 3  # the sink was retried until it worked; nothing was dropped
    await bus.close()


async def test_batch_end_runs_before_acknowledgement(bus: EventBus) -> None:
    """A consumer commits at the end of a batch; a failed commit brings the batch back (NATS)."""
    handled: list[int] = []
    commits: list[int] = []
    failed_batch: list[int] = []
    fail_first_commit = isinstance(bus, NatsJetStreamBus)

    async def handler(event: Event) -> None:
        handled.append(event.data["n"])

    async def commit() -> None:
        nonlocal fail_first_commit
        if fail_first_commit:
            fail_first_commit = False
            failed_batch.extend(handled)
            raise RuntimeError("database briefly unavailable")
        commits.append(len(handled))

    for n in range(5):
        await bus.publish(_subject(bus, "batch"), {"n": n})
    # A short ack_wait: a message that reached a pull just as it timed out comes back by ack_wait.
    subscription = await bus.subscribe(
        _subject(bus, "*"), "batcher", handler, on_batch_end=commit, ack_wait_s=2.0
    )
    redelivered = lambda: all(handled.count(n) >= 2 for n in failed_batch)  # noqa: E731
    await _wait_for(lambda: bool(commits) and set(handled) == set(range(5)) and redelivered())
    if isinstance(bus, NatsJetStreamBus):
        # the fetch may pull fewer than five; whatever the failed batch held came again
        assert failed_batch
        assert redelivered()
    await subscription.stop()


async def test_a_lingering_consumer_takes_a_stream_in_batches() -> None:
    """With linger_s the in-process consumer waits for events to gather: one wake-up per batch."""
    bus = InProcessBus()
    await bus.start()
    handled: list[int] = []
    batches: list[int] = []

    async def handler(event: Event) -> None:
        handled.append(event.data["n"])

    async def batch_end() -> None:
        batches.append(len(handled) - sum(batches))

    await bus.subscribe("tianfu.test.*", "lingering", handler, on_batch_end=batch_end, linger_s=0.05)
    for n in range(200):
        await bus.publish("tianfu.test.tick", {"n": n})
        if n % 20 == 0:
            await asyncio.sleep(0.001)  # a stream, not one burst
    await _wait_for(lambda: len(handled) == 200)
    assert handled == list(range(200))  # in order, none lost
    assert len(batches) <= 5  # without lingering: a batch per pause of the publisher, about 10
    await bus.close()
