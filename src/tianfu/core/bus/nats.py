"""NATS JetStream event bus, for several processes on several machines.

One stream (``TIANFU`` by default) holds every ``tianfu.>`` subject. Publishing sets ``Nats-Msg-Id``
to the event id, so a retried publish within the duplicate window is stored once. Each durable
subscription is a pull consumer with explicit acks; a handler failure naks with back-off, and after
``max_deliver`` deliveries the event is handed to the dead-letter sink and terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from tianfu.core.bus import SUBJECT_ROOT, Event, EventBus, Handler, Subscription

log = logging.getLogger(__name__)
FETCH_WAIT_S = 0.5  # how long one pull waits for messages; also bounds how long stopping takes


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
    def __init__(self, url: str, *, stream: str = "TIANFU", subjects: str = f"{SUBJECT_ROOT}.>") -> None:
        self._url = url
        self._stream = stream
        self._subjects = subjects
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
            event.subject, event.to_bytes(), stream=self._stream, headers={"Nats-Msg-Id": event.id}
        )

    async def subscribe(
        self,
        subject_filter: str,
        durable: str,
        handler: Handler,
        *,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
    ) -> Subscription:
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,  # we count deliveries ourselves: an event leaves only when dead-lettered
            ack_wait=ack_wait_s,
            filter_subject=subject_filter,
        )
        psub = await self.js.pull_subscribe(
            subject_filter, durable=durable, stream=self._stream, config=config
        )
        subscription = _NatsSubscription(self, psub)
        subscription.task = asyncio.create_task(
            self._pull_loop(subscription, durable, handler, max_deliver), name=f"nats-{durable}"
        )
        self._subscriptions.add(subscription)
        return subscription

    async def _pull_loop(
        self, subscription: _NatsSubscription, durable: str, handler: Handler, max_deliver: int
    ) -> None:
        while not subscription.stopping.is_set():
            try:
                messages = await subscription.psub.fetch(batch=64, timeout=FETCH_WAIT_S)
            except NatsTimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: keep trying, the client reconnects
                log.warning("fetch for %s failed: %s", durable, exc)
                await asyncio.sleep(1.0)
                continue
            for msg in messages:
                await self._handle(msg, durable, handler, max_deliver)

    async def _handle(self, msg: Msg, durable: str, handler: Handler, max_deliver: int) -> None:
        """Process one message; acknowledgement failures leave it to JetStream's redelivery."""
        delivery = msg.metadata.num_delivered
        try:
            event = Event.from_bytes(msg.data, delivery=delivery)
        except Exception as exc:
            log.error("undecodable message on %s for %s: %s", msg.subject, durable, exc)
            raw = Event(subject=msg.subject, data={"raw": msg.data.decode(errors="replace")})
            if await self._dead_letter(raw, durable, f"undecodable: {exc}"):
                await _settle(msg.term())
            return
        try:
            await handler(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer %s failed on %s (delivery %d): %s", durable, event.id, delivery, exc)
            if delivery >= max_deliver and await self._dead_letter(
                event, durable, f"{type(exc).__name__}: {exc}"
            ):
                await _settle(msg.term())
            else:
                await _settle(msg.nak(delay=min(0.1 * 2**delivery, 10.0)))
            return
        await _settle(msg.ack())


async def _settle(acknowledgement: Awaitable[None]) -> None:
    try:
        await acknowledgement
    except Exception as exc:  # disconnected: JetStream redelivers after ack_wait; consumers are idempotent
        log.warning("could not acknowledge a message: %s", exc)
