"""MQTT ingest: the documented payload, and a real broker (Mosquitto) end to end."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.core.test_bus import _wait_for
from tianfu.core.bus import Event
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.kernel import Kernel
from tianfu.monitoring.ingest.mqtt import MqttIngest, PayloadError, parse_payload
from tianfu.monitoring.module import Ingest
from tianfu.monitoring.settings import MonitoringSettings

TOPIC = "tianfu/v1/vitals/WEAR-7"
GOOD = {
    "id": "m-1",
    "time": "2026-11-27T08:30:00+08:00",
    "observations": [
        {"system": "http://loinc.org", "code": "8867-4", "value": 72},
        {"system": "MDC", "code": "150456", "value": 97},
        {"system": "LOINC", "code": "8310-5", "value": 99.5, "unit": "[degF]"},
        {"system": "LOINC", "code": "29463-7", "value": 70},  # body weight: kept as unmapped
    ],
}


def test_payload_with_loinc_and_mdc_codes() -> None:
    report = parse_payload(TOPIC, json.dumps(GOOD).encode())
    assert report.device_id == "WEAR-7"
    assert report.source == "mqtt"
    assert report.message_id == "m-1"
    values = {m.parameter: m.value for m in report.measurements}
    assert values["heart_rate"] == 72
    assert values["spo2"] == 97
    assert values["temperature"] == pytest.approx(37.5)
    assert report.measurements[0].observed_at == datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    assert [u.code for u in report.unmapped] == ["LOINC:29463-7"]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("tianfu/v1/vitals/", GOOD, "does not name one device"),
        ("other/topic", GOOD, "is not tianfu/v1/vitals/"),
        (TOPIC, {**GOOD, "time": "2026-11-27T08:30:00"}, "needs a zone"),
        (TOPIC, {**GOOD, "observations": []}, "observations"),
        (
            TOPIC,
            {**GOOD, "observations": [{"system": "SNOMED", "code": "1", "value": 1}]},
            "unknown code system",
        ),
        (TOPIC, {**GOOD, "observations": [{"system": "LOINC", "code": "8867-4", "value": "fast"}]}, "value"),
        (TOPIC, {**GOOD, "extra": 1}, "extra"),
    ],
)
def test_invalid_payloads_say_why(topic: str, payload: dict, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_payload(topic, json.dumps(payload).encode())


def test_not_json_is_refused() -> None:
    with pytest.raises(PayloadError, match="invalid payload"):
        parse_payload(TOPIC, b"\xff not json")


async def test_broker_to_bus_and_dead_letters(mqtt_url: str, kernel: Kernel, db: Session) -> None:
    """A wearable publishes through Mosquitto: a good message reaches the bus, a bad one the dead letters."""
    import aiomqtt

    await kernel.start()
    seen: list[Event] = []

    async def watch(event: Event) -> None:
        seen.append(event)

    await kernel.bus.subscribe("tianfu.monitoring.report.>", "watch", watch)
    # A private topic namespace is not possible with the fixed topic, so a unique device id keeps
    # concurrent runs apart; the client id is unique too (persistent sessions are per client id).
    device = f"WEAR-{uuid.uuid4().hex[:8]}"
    ingest = Ingest(kernel, MonitoringSettings(partitions=4))
    listener = MqttIngest(
        mqtt_url, ingest.accept, ingest.reject, client_id=f"tianfu-test-{uuid.uuid4().hex[:8]}"
    )
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        host, port = listener.host, listener.port
        async with aiomqtt.Client(host, port, identifier=f"wearable-{device}") as wearable:
            await wearable.publish(f"tianfu/v1/vitals/{device}", json.dumps(GOOD).encode(), qos=1)
            await wearable.publish(f"tianfu/v1/vitals/{device}", b'{"id": "m-2"}', qos=1)
        await _wait_for(lambda: any(e.data["device_id"] == device for e in seen) and listener.rejected >= 1)
    finally:
        await listener.stop()
        await kernel.stop()
    event = next(e for e in seen if e.data["device_id"] == device)
    assert event.data["source"] == "mqtt"
    assert {m[0] for m in event.data["measurements"]} == {"heart_rate", "spo2", "temperature"}
    letters = db.scalars(select(DeadLetter).where(DeadLetter.source == "mqtt")).all()
    assert any(device in letter.meta["topic"] and "observations" in letter.reason for letter in letters)
    db.commit()
