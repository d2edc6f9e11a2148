"""NATS JetStream event bus, for several processes on several machines.

One stream (``TIANFU`` by default) holds every ``tianfu.>`` subject. A *namespace* prefixes every subject
on the server (``<namespace>.tianfu.>``), so that several deployments, or tests, share one NATS server
without their streams overlapping; events keep their plain subjects. Publishing sets ``Nats-Msg-Id``
to the event id, so a retried publish within the duplicate window is stored once. Each durable
subscription is a pull consumer with explicit acks, fetching messages in batches: after a batch the
subscriber's ``on_batch_end`` runs (a consumer commits its writes there), then the batch is acknowledged.
A handler failure naks with back-off; after ``max_deliver`` deliveries the event is handed to the
dead-letter sink and terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from tianfu.core.bus import SUBJECT_ROOT, BatchEnd, Event, EventBus, Handler, Subscription

log = logging.getLogger(__name__)
FETCH_WAIT_S = 0.5  # how long one pull waits for messages; also bounds how long stopping takes
FETCH_BATCH = 256


class _NatsSubscription(Subscription):
    """Stops between fetches, so that no pulled message is left unacknowledged until ack_wait."""

    def __init__(self, bus: NatsJetStreamBus, psub: JetStreamContext.PullSubscription) -> None:
        self.bus = bus
        self.psub = psub
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=FETCH_WAIT_S * 4)
            except TimeoutError:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
        with contextlib.suppress(Exception):
            await self.psub.unsubscribe()
        self.bus._subscriptions.discard(self)


class NatsJetStreamBus(EventBus):
    def __init__(self, url: str, *, stream: str = "TIANFU", namespace: str = "") -> None:
        self._url = url
        self._stream = stream
        self._prefix = f"{namespace}." if namespace else ""
        self._subjects = f"{self._prefix}{SUBJECT_ROOT}.>"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: set[_NatsSubscription] = set()

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NATS bus is not started")
        return self._js

    async def start(self) -> None:
        self._nc = await nats.connect(self._url, connect_timeout=5, max_reconnect_attempts=-1, name="tianfu")
        self._js = self._nc.jetstream()
        config = StreamConfig(
            name=self._stream,
            subjects=[self._subjects],
            storage=StorageType.FILE,
            duplicate_window=120.0,
            max_age=7 * 24 * 3600.0,
        )
        try:
            await self._js.stream_info(self._stream)
            await self._js.update_stream(config)
        except NotFoundError:
            await self._js.add_stream(config)

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.stop()
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
            self._js = None

    async def healthy(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def delete_stream(self) -> None:
        """Remove the stream and everything in it (used by tests on throw-away streams)."""
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(self._stream)

    async def publish_event(self, event: Event) -> None:
        await self.js.publish(
            self._prefix + event.subject,
            event.to_bytes(),
            stream=self._stream,
            headers={"Nats-Msg-Id": event.id},
        )

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        on_batch_end: BatchEnd | None = None,
        linger_s: float = 0.0,  # pulls fetch batches already
    ) -> Subscription:
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,  # we count deliveries ourselves: an event leaves only when dead-lettered
            ack_wait=ack_wait_s,
            filter_subject=self._prefix + subject_filter,
        )
        psub = await self.js.pull_subscribe(
            self._prefix + subject_filter, durable=durable, stream=self._stream, config=config
        )
        subscription = _NatsSubscription(self, psub)
        subscription.task = asyncio.create_task(
            self._pull_loop(subscription, durable, handler, max_deliver, on_batch_end), name=f"nats-{durable}"
        )
        self._subscriptions.add(subscription)
        return subscription

    async def _pull_loop(
        self,
        subscription: _NatsSubscription,
        durable: str,
        handler: Handler,
        max_deliver: int,
        on_batch_end: BatchEnd | None,
    ) -> None:
        while not subscription.stopping.is_set():
            try:
                messages = await subscription.psub.fetch(batch=FETCH_BATCH, timeout=FETCH_WAIT_S)
            except NatsTimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: keep trying, the client reconnects
                log.warning("fetch for %s failed: %r", durable, exc)
                await asyncio.sleep(1.0)
                continue
            settled: list[Callable[[], Awaitable[None]]] = []
            for msg in messages:
                settled.append(await self._handle(msg, durable, handler, max_deliver))
            if on_batch_end is not None:
                try:
                    await on_batch_end()
                except Exception as exc:  # nothing of this batch is durable: let it all come again
                    log.warning("consumer %s could not finish a batch: %s", durable, exc)
                    for msg in messages:
                        await _settle(msg.nak(delay=1.0))
                    continue
            for acknowledgement in settled:
                await _settle(acknowledgement())

    async def _handle(
        self, msg: Msg, durable: str, handler: Handler, max_deliver: int
    ) -> Callable[[], Awaitable[None]]:
        """Process one message; returns how to settle it (ack, nak or term), done after the batch."""
        delivery = msg.metadata.num_delivered
        try:
            event = Event.from_bytes(msg.data, delivery=delivery)
        except Exception as exc:
            log.error("undecodable message on %s for %s: %s", msg.subject, durable, exc)
            raw = Event(subject=msg.subject, data={"raw": msg.data.decode(errors="replace")})
            if await self._dead_letter(raw, durable, f"undecodable: {exc}"):
                return msg.term
            return partial(msg.nak, delay=1.0)
        try:
            await handler(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer %s failed on %s (delivery %d): %s", durable, event.id, delivery, exc)
            if delivery >= max_deliver and await self._dead_letter(
                event, durable, f"{type(exc).__name__}: {exc}"
            ):
                return msg.term
            return partial(msg.nak, delay=min(0.1 * 2**delivery, 10.0))
        return msg.ack


async def _settle(acknowledgement: Awaitable[None]) -> None:
    try:
        await acknowledgement
    except Exception as exc:  # disconnected: JetStream redelivers after ack_wait; consumers are idempotent
        log.warning("could not acknowledge a message: %s", exc)
