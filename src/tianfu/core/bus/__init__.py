"""The event bus: publish, and durable subscriptions with acknowledgement.

Delivery is at least once: a handler that returns acknowledges the event; one that raises gets it again
(up to ``max_deliver`` times, then the event goes to the dead-letter store). Consumers must therefore be
idempotent; :mod:`tianfu.core.bus.idempotency` helps.

Subjects are dotted, under ``tianfu.``: ``tianfu.<domain>.<event>[.<partition key>]``. Filters use
NATS wildcards: ``*`` matches one token, ``>`` the rest.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SUBJECT_ROOT = "tianfu"
log = logging.getLogger(__name__)


def new_event_id() -> str:
    """A random UUID without a system call per event (ids need to be unique, not secret)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


@dataclass(frozen=True)
class Event:
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: new_event_id())
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    delivery: int = 1  # 1 on first delivery, then 2, 3 ... on redelivery

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "subject": self.subject,
                "occurred_at": self.occurred_at.isoformat(),
                "data": self.data,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, *, delivery: int = 1) -> Event:
        body = json.loads(raw)
        return cls(
            subject=body["subject"],
            data=body["data"],
            id=body["id"],
            occurred_at=datetime.fromisoformat(body["occurred_at"]),
            delivery=delivery,
        )


Handler = Callable[[Event], Awaitable[None]]
BatchEnd = Callable[[], Awaitable[None]]  # after a batch of handled events, before they are acknowledged
DeadLetterSink = Callable[[Event, str, str], Awaitable[None]]  # event, consumer, error


def subject_matches(pattern: str, subject: str) -> bool:
    pattern_parts = pattern.split(".")
    subject_parts = subject.split(".")
    for i, part in enumerate(pattern_parts):
        if part == ">":
            return len(subject_parts) > i
        if i >= len(subject_parts) or part not in ("*", subject_parts[i]):
            return False
    return len(pattern_parts) == len(subject_parts)


@functools.lru_cache(maxsize=4096)  # a hot path publishes to the same few hundred subjects over and over
def validate_subject(subject: str) -> None:
    parts = subject.split(".")
    if parts[0] != SUBJECT_ROOT or len(parts) < 3 or any(not p or p in {"*", ">"} for p in parts):
        raise ValueError(f"subject must look like {SUBJECT_ROOT}.<domain>.<event>, got {subject!r}")
    if any(c.isspace() for c in subject):
        raise ValueError(f"subject must not contain whitespace: {subject!r}")


class Subscription(ABC):
    @abstractmethod
    async def stop(self) -> None: ...


class EventBus(ABC):
    """The one interface modules use; see :func:`make_bus` for the implementations."""

    dead_letter_sink: DeadLetterSink | None = None
    # Whether an acknowledged event survives this process (JetStream: yes; in process: nothing does).
    durable: bool = True

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish_event(self, event: Event) -> None: ...

    async def publish(self, subject: str, data: dict[str, Any], *, event_id: str | None = None) -> Event:
        validate_subject(subject)
        event = Event(subject=subject, data=data, id=event_id or new_event_id())
        await self.publish_event(event)
        return event

    def publish_nowait(self, subject: str, data: dict[str, Any], *, event_id: str | None = None) -> bool:
        """Publish without waiting if this bus can (True); a bus that must wait for its server says False
        and the caller awaits :meth:`publish` instead."""
        return False

    @abstractmethod
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
        """Deliver events matching ``subject_filter`` to ``handler``, remembered under ``durable``.

        ``on_batch_end`` is awaited after each batch of handled events and before they are acknowledged:
        a consumer that buffers its writes commits them there, so that what is acknowledged is durable.
        ``linger_s``: after a batch, wait this long for the next one to gather, so that a stream of
        thousands of events a second is handled in batches rather than one wake-up per event.
        """

    @abstractmethod
    async def healthy(self) -> bool: ...

    async def _dead_letter(self, event: Event, durable: str, error: str) -> bool:
        """Hand a poison event to the sink; False if that failed too (the caller then keeps the event)."""
        if self.dead_letter_sink is None:
            log.error(
                "consumer %s gave up on event %s (%s) and no dead-letter sink is set",
                durable,
                event.id,
                error,
            )
            return True
        try:
            await self.dead_letter_sink(event, durable, error)
        except Exception:
            log.exception("could not dead-letter event %s for %s", event.id, durable)
            return False
        return True


def make_bus(url: str, *, stream: str = "TIANFU", namespace: str = "") -> EventBus:
    if url.startswith("memory://"):
        from tianfu.core.bus.memory import InProcessBus

        return InProcessBus()
    if url.startswith(("nats://", "tls://")):
        from tianfu.core.bus.nats import NatsJetStreamBus

        return NatsJetStreamBus(url, stream=stream, namespace=namespace)
    raise ValueError(f"unsupported TIANFU_BUS_URL {url!r}: use memory:// or nats://host:port")
