"""In-process event bus: the embedded default, with the same delivery semantics as JetStream.

Events are kept in memory (the last ``retain`` of them) for the life of the process; a new durable
consumer receives the retained events that match, like JetStream's DeliverAll. Each consumer handles
its events in order, retrying a failing one with back-off before moving on, which keeps per-key order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from tianfu.core.bus import (
    BatchEnd,
    Event,
    EventBus,
    Handler,
    Subscription,
    new_event_id,
    subject_matches,
    validate_subject,
)

log = logging.getLogger(__name__)
YIELD_EVERY_S = 0.02  # the longest a consumer works through a backlog before letting the loop run others


@dataclass
class _Consumer:
    durable: str
    subject_filter: str
    handler: Handler
    max_deliver: int
    on_batch_end: BatchEnd | None = None
    linger_s: float = 0.0
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class _InProcessSubscription(Subscription):
    def __init__(self, bus: InProcessBus, consumer: _Consumer) -> None:
        self._bus = bus
        self._consumer = consumer

    async def stop(self) -> None:
        await self._bus._stop_consumer(self._consumer)


class InProcessBus(EventBus):
    durable = False

    def __init__(self, *, retain: int = 10_000, retry_delay_s: float = 0.05) -> None:
        self._retained: deque[Event] = deque(maxlen=retain)
        self._consumers: dict[str, _Consumer] = {}
        self._routes: dict[str, list[_Consumer]] = {}  # subject → its consumers; reset when they change
        self._retry_delay_s = retry_delay_s
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for consumer in list(self._consumers.values()):
            await self._stop_consumer(consumer)

    async def healthy(self) -> bool:
        return not self._closed

    async def publish_event(self, event: Event) -> None:
        self._deliver(event)

    def publish_nowait(self, subject: str, data: dict[str, Any], *, event_id: str | None = None) -> bool:
        validate_subject(subject)
        self._deliver(Event(subject=subject, data=data, id=event_id or new_event_id()))
        return True

    def _deliver(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("event bus is closed")
        self._retained.append(event)
        consumers = self._routes.get(event.subject)
        if consumers is None:
            consumers = [
                c for c in self._consumers.values() if subject_matches(c.subject_filter, event.subject)
            ]
            self._routes[event.subject] = consumers
        for consumer in consumers:
            consumer.queue.put_nowait(event)

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        on_batch_end: BatchEnd | None = None,
        linger_s: float = 0.0,
    ) -> Subscription:
        if durable in self._consumers:
            raise ValueError(f"durable consumer {durable!r} is already subscribed")
        consumer = _Consumer(durable, subject_filter, handler, max_deliver, on_batch_end, linger_s)
        for event in self._retained:
            if subject_matches(subject_filter, event.subject):
                consumer.queue.put_nowait(event)
        self._consumers[durable] = consumer
        self._routes.clear()
        consumer.task = asyncio.create_task(self._run(consumer), name=f"bus-consumer-{durable}")
        return _InProcessSubscription(self, consumer)

    async def _stop_consumer(self, consumer: _Consumer) -> None:
        self._consumers.pop(consumer.durable, None)
        self._routes.clear()
        if consumer.task is not None:
            consumer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.task

    async def _run(self, consumer: _Consumer) -> None:
        loop = asyncio.get_running_loop()
        turn_ends = 0.0
        while True:
            if consumer.queue.empty():
                event = await consumer.queue.get()
                turn_ends = loop.time() + YIELD_EVERY_S
            else:  # a backlog: handled in turns, so that sockets and other consumers are served between them
                if loop.time() > turn_ends:
                    await asyncio.sleep(0)
                    turn_ends = loop.time() + YIELD_EVERY_S
                event = consumer.queue.get_nowait()
            delivery = 0
            while True:
                delivery += 1
                try:
                    await consumer.handler(event if delivery == 1 else replace(event, delivery=delivery))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a failing handler must never stop the consumer
                    log.warning(
                        "consumer %s failed on %s (delivery %d): %s",
                        consumer.durable,
                        event.id,
                        delivery,
                        exc,
                    )
                    if delivery >= consumer.max_deliver and await self._dead_letter(
                        event, consumer.durable, f"{type(exc).__name__}: {exc}"
                    ):
                        break
                    # Back off and retry; if even the dead-letter store failed, keep the event and retry.
                    await asyncio.sleep(self._retry_delay_s * min(delivery, 20))
            if consumer.queue.empty():
                # A batch ends when the queue runs dry: under load, many events share one commit.
                if consumer.on_batch_end is not None:
                    try:
                        await consumer.on_batch_end()
                    except Exception:
                        log.exception("consumer %s could not finish a batch", consumer.durable)
                if consumer.linger_s:
                    await asyncio.sleep(consumer.linger_s)
