"""MQTT ingest for wearables and gateways: topic ``tianfu/v1/vitals/{device_id}``, JSON payload.

Payload (UTF-8 JSON)::

    {
      "id": "a1b2c3",                          # message id, unique per device (repeats are dropped)
      "time": "2026-11-27T08:30:00+08:00",     # when measured (ISO 8601 with zone)
      "observations": [                        # one or more
        {"system": "http://loinc.org", "code": "8867-4", "value": 72},
        {"system": "urn:iso:std:iso:11073:10101", "code": "150456", "value": 97, "time": "..."}
      ]
    }

``system`` may also be written ``LOINC`` or ``MDC``. Units are the canonical ones (``/min``, ``%``,
``mm[Hg]``, ``Cel``); a ``unit`` of ``[degF]`` or ``kPa`` is converted. Anything else is refused into the
dead-letter store with the reason. Messages use QoS 1: the broker redelivers until Tianfu acknowledges,
which it does only after the report is on the event bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tianfu.monitoring.ingest.codes import LOINC_TO_PARAMETER, MDC_DEGF, MDC_KPA, MDC_TO_PARAMETER, convert
from tianfu.monitoring.ingest.report import DeviceReport, Measurement, Unmapped

log = logging.getLogger(__name__)

TOPIC_PREFIX = "tianfu/v1/vitals/"
LOINC_SYSTEMS = {"http://loinc.org", "loinc"}
MDC_SYSTEMS = {"urn:iso:std:iso:11073:10101", "mdc"}
UNIT_CODES = {"[degf]": MDC_DEGF, "degf": MDC_DEGF, "kpa": MDC_KPA}


class PayloadError(ValueError):
    pass


class _Observation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str = Field(max_length=100)
    code: str = Field(min_length=1, max_length=40)
    value: float = Field(allow_inf_nan=False)
    unit: str = Field("", max_length=20)
    time: datetime | None = None

    @field_validator("time")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("time needs a zone, e.g. +08:00")
        return value


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    time: datetime
    observations: list[_Observation] = Field(min_length=1, max_length=200)

    @field_validator("time")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time needs a zone, e.g. +08:00")
        return value


def device_from_topic(topic: str) -> str:
    if not topic.startswith(TOPIC_PREFIX):
        raise PayloadError(f"topic {topic!r} is not {TOPIC_PREFIX}{{device_id}}")
    device = topic[len(TOPIC_PREFIX) :]
    if not device or "/" in device or len(device) > 100:
        raise PayloadError(f"topic {topic!r} does not name one device")
    return device


def parse_payload(topic: str, payload: bytes, *, received_at: datetime | None = None) -> DeviceReport:
    device = device_from_topic(topic)
    try:
        body = _Payload.model_validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PayloadError(f"invalid payload: {problems}") from exc
    report = DeviceReport(
        device_id=device, source="mqtt", message_id=body.id, received_at=received_at or datetime.now(UTC)
    )
    for item in body.observations:
        system = item.system.lower()
        if system in LOINC_SYSTEMS:
            parameter = LOINC_TO_PARAMETER.get(item.code)
            code = f"LOINC:{item.code}"
        elif system in MDC_SYSTEMS:
            parameter = MDC_TO_PARAMETER.get(int(item.code)) if item.code.isdigit() else None
            code = f"MDC:{item.code}"
        else:
            raise PayloadError(f"unknown code system {item.system!r}: use LOINC or MDC")
        if parameter is None:
            report.unmapped.append(Unmapped(code=code, value=str(item.value), unit=item.unit))
            continue
        value = convert(parameter, item.value, UNIT_CODES.get(item.unit.lower()))
        report.measurements.append(
            Measurement(parameter, value, (item.time or body.time).astimezone(UTC), code)
        )
    return report


ReportHandler = Callable[[DeviceReport], Awaitable[None]]
RejectHandler = Callable[[bytes, str, dict[str, Any]], Awaitable[None]]


class MqttIngest:
    """Subscribes to ``tianfu/v1/vitals/+`` (QoS 1) and reconnects when the broker goes away."""

    def __init__(
        self, url: str, on_report: ReportHandler, on_reject: RejectHandler, *, client_id: str = ""
    ) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.username = parsed.username
        self.password = parsed.password
        self.client_id = client_id or "tianfu-ingest"
        self.on_report = on_report
        self.on_reject = on_reject
        self.accepted = 0
        self.rejected = 0
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-ingest")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=self.client_id,
                    clean_session=False,
                ) as client:
                    # PUBACK only once the report is on the bus (or in the dead-letter store): a crash
                    # before then leaves the message with the broker, which sends it again.
                    client._client.manual_ack_set(True)
                    await client.subscribe(TOPIC_PREFIX + "+", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        await self._handle(str(message.topic), bytes(message.payload))
                        if message.qos > 0:
                            client._client.ack(message.mid, message.qos)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down or restarting: try again shortly
                self.connected.clear()
                log.warning("MQTT connection to %s:%s lost: %s", self.host, self.port, exc)
                await asyncio.sleep(2.0)

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            report = parse_payload(topic, payload)
        except PayloadError as exc:
            await self.on_reject(payload, str(exc), {"topic": topic})
            self.rejected += 1  # counted once it is in the dead-letter store
            return
        await self.on_report(report)
        self.accepted += 1
