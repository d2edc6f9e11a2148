"""The scoring and alarm worker with the in-process bus and a real (demo) database."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_bus import _wait_for
from tianfu.core.bus import Event
from tianfu.core.kernel import Kernel
from tianfu.monitoring.ingest.report import DeviceReport, Measurement, report_subject
from tianfu.monitoring.pipeline import Pipeline
from tianfu.monitoring.settings import MonitoringSettings
from tianfu.monitoring.tables import AlarmEpisode, AlarmEvent, MonitoringDevice, VitalSample

SETTINGS = MonitoringSettings(hl7_port=0, sample_interval_s=60, partitions=4)


@pytest.fixture
async def pipeline(kernel: Kernel, demo: Demo, db: Session) -> AsyncIterator[Pipeline]:
    bed = demo.bed("CARD1-01")
    db.add(
        MonitoringDevice(
            identifier="MON-1", label="monitor 1", bed_id=bed.id, organization_id=bed.organization_id
        )
    )
    db.commit()
    await kernel.start()
    worker = Pipeline(kernel, SETTINGS)
    await worker.start()
    yield worker
    await worker.stop()
    await kernel.stop()


def report(
    values: dict[str, float], at: datetime, *, device: str = "MON-1", message: str = ""
) -> DeviceReport:
    return DeviceReport(
        device_id=device,
        source="test",
        message_id=message or f"{device}-{at.timestamp()}",
        received_at=at,
        measurements=[Measurement(p, v, at, "test") for p, v in values.items()],
    )


NORMAL = {"heart_rate": 72, "spo2": 97, "respiratory_rate": 16, "systolic_bp": 124, "temperature": 36.8}


async def send(kernel: Kernel, item: DeviceReport) -> None:
    await kernel.bus.publish(report_subject(item.device_id, SETTINGS.partitions), item.to_data())


async def test_report_becomes_live_state_and_a_stored_sample(
    pipeline: Pipeline, kernel: Kernel, demo: Demo, db: Session
) -> None:
    seen: list[dict] = []

    async def watch(event: Event) -> None:
        seen.extend(event.data["beds"])

    await kernel.bus.subscribe("tianfu.monitoring.bed.>", "watch", watch)
    now = datetime.now(UTC)
    await send(kernel, report(NORMAL, now))
    await _wait_for(lambda: bool(seen))
    state = seen[-1]
    assert state["patient"]["name"] == "李建国"
    assert state["vitals"]["heart_rate"][0] == 72
    assert state["news2"]["total"] == 0
    assert state["news2"]["partial"]  # consciousness and oxygen not charted
    assert state["mews"] == {"total": 1, "missing": ["consciousness"]}  # RR 16 scores 1 in MEWS
    assert state["qsofa"] == {"total": 0, "missing": ["mentation"]}
    await pipeline.commit()
    sample = db.scalars(select(VitalSample).where(VitalSample.patient_id == demo.patient("李建国").id)).one()
    assert (sample.heart_rate, sample.spo2, sample.news2) == (72, 97, 0)
    device = db.scalars(select(MonitoringDevice).where(MonitoringDevice.identifier == "MON-1")).one()
    db.refresh(device)
    assert device.last_seen_at is not None  # the devices page shows the monitor as sending
    db.commit()


async def test_sustained_low_spo2_raises_one_alarm_and_acknowledgement_is_recorded(
    pipeline: Pipeline, kernel: Kernel, demo: Demo, db: Session
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=60)
    for second in range(0, 40, 2):  # 40 s of SpO2 84 %: past the 15-s delay
        await send(kernel, report(NORMAL | {"spo2": 84}, start + timedelta(seconds=second)))
    await _wait_for(lambda: pipeline.processed >= 20)
    await pipeline.commit()
    episodes = db.scalars(select(AlarmEpisode)).all()
    db.commit()
    conditions = sorted(e.condition for e in episodes)
    assert "limit:spo2_low_critical" in conditions
    assert len(conditions) == len(set(conditions))  # one episode per condition
    critical = next(e for e in episodes if e.condition == "limit:spo2_low_critical")
    assert critical.priority == "high"
    assert critical.patient_id == demo.patient("李建国").id
    nurse_id = demo.user("nurse.wang").id
    await kernel.bus.publish(
        f"tianfu.monitoring.command.p{_partition('MON-1')}",
        {
            "episode_id": critical.id,
            "action": "acknowledge",
            "user_id": nurse_id,
            "at": datetime.now(UTC).isoformat(),
        },
    )

    def acknowledged() -> bool:
        with kernel.sessions() as session:
            return session.get(AlarmEpisode, critical.id).state == "acknowledged"  # type: ignore[union-attr]

    await _wait_for(acknowledged)
    with kernel.sessions() as session:
        events = [
            e.event
            for e in session.scalars(
                select(AlarmEvent).where(AlarmEvent.episode_id == critical.id).order_by(AlarmEvent.id)
            )
        ]
        episode = session.get(AlarmEpisode, critical.id)
        assert episode is not None
        assert episode.acknowledged_by_id == nurse_id
    assert events[0] == "raised"
    assert "acknowledged" in events


def _partition(device: str) -> int:
    from tianfu.monitoring.ingest.report import partition_of

    return partition_of(device, SETTINGS.partitions)


async def test_a_repeated_report_is_processed_once(pipeline: Pipeline, kernel: Kernel) -> None:
    item = report(NORMAL, datetime.now(UTC), message="same-id")
    await send(kernel, item)
    await send(kernel, item)
    await _wait_for(lambda: pipeline.processed + pipeline.duplicates >= 2)
    assert (pipeline.processed, pipeline.duplicates) == (1, 1)


async def test_unassociated_device_data_is_kept(pipeline: Pipeline, kernel: Kernel, db: Session) -> None:
    await send(kernel, report(NORMAL, datetime.now(UTC), device="UNKNOWN-9"))
    await asyncio.sleep(0.3)
    await pipeline.commit()
    device = db.scalars(select(MonitoringDevice).where(MonitoringDevice.identifier == "UNKNOWN-9")).one()
    assert device.bed_id is None  # registered automatically, not placed
    sample = db.scalars(select(VitalSample).where(VitalSample.device_id == device.id)).one()
    assert sample.patient_id is None
    assert sample.flags == {"unassociated": True}
    db.commit()


async def test_samples_are_stored_once_per_interval(pipeline: Pipeline, kernel: Kernel, db: Session) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    for second in range(0, 180, 5):
        await send(kernel, report(NORMAL, start + timedelta(seconds=second)))
    await _wait_for(lambda: pipeline.processed >= 36)
    await pipeline.commit()
    stored = db.scalars(
        select(VitalSample.observed_at).where(VitalSample.resolution == "minute").order_by("observed_at")
    ).all()
    db.commit()
    # The first report's row at once; the next at the bed's own moment of the minute (so that beds started
    # together do not all write in the same second), then one per 60 s of data.
    assert stored[0] == start
    assert 0 < (stored[1] - stored[0]).total_seconds() <= 60
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(stored[1:])]
    assert gaps == [60.0] * (len(stored) - 2)
    assert len(stored) in (3, 4)


async def test_an_episode_raised_and_ended_within_one_commit_is_stored_as_if_committed_event_by_event(
    pipeline: Pipeline, demo: Demo, db: Session
) -> None:
    """Writes are folded per episode in a batch: the row must end as the events applied in order leave it."""
    from tianfu.monitoring.alarms import AlarmEvent as EngineEvent
    from tianfu.monitoring.alarms import EventKind, Priority

    bed = demo.bed("CARD1-01").id
    nurse = demo.user("nurse.wang").id
    start = datetime.now(UTC).replace(microsecond=0)

    def event(kind: EventKind, second: int, **extra: object) -> EngineEvent:
        at = start + timedelta(seconds=second)
        return EngineEvent(kind, at, bed, "limit:spo2_low", "e-1", Priority.MEDIUM, "nurse", **extra)  # type: ignore[arg-type]

    history = [
        event(EventKind.RAISED, 0, value=88.0),
        event(EventKind.ESCALATED, 30),
        event(EventKind.ESCALATED, 60),
        event(EventKind.PAUSED, 70, user=nurse, until=start + timedelta(seconds=190)),
        event(EventKind.ACKNOWLEDGED, 80, user=nurse),
        event(EventKind.CLEARED, 90),
    ]
    pipeline._handle_alarm_events(history)
    await pipeline.commit()
    episode = db.scalars(select(AlarmEpisode).where(AlarmEpisode.engine_episode_id == "e-1")).one()
    assert (episode.state, episode.escalation_level, episode.value) == ("cleared", 2, 88.0)
    assert episode.acknowledged_by_id == nurse
    assert episode.acknowledged_at == start + timedelta(seconds=80)
    assert episode.cleared_at == start + timedelta(seconds=90)
    stored = db.scalars(select(AlarmEvent).where(AlarmEvent.episode_id == episode.id).order_by(AlarmEvent.id))
    assert [e.event for e in stored] == [
        "raised",
        "escalated",
        "escalated",
        "paused",
        "acknowledged",
        "cleared",
    ]
    db.commit()


async def test_discharge_ends_monitoring_of_the_stay(
    pipeline: Pipeline, kernel: Kernel, demo: Demo, db: Session
) -> None:
    from tests.core.test_access import principal
    from tianfu.core.patients import service

    start = datetime.now(UTC) - timedelta(seconds=60)
    for second in range(0, 40, 2):
        await send(kernel, report(NORMAL | {"spo2": 84}, start + timedelta(seconds=second)))
    await _wait_for(lambda: pipeline.processed >= 20)
    await pipeline.commit()
    encounter = next(e for e in demo.patient("李建国").encounters if e.status == "in-progress")
    service.discharge(db, kernel.audit, principal(db, "dr.zhang"), encounter.id)
    db.commit()

    def cleared() -> bool:
        with kernel.sessions() as session:
            return all(e.state == "cleared" for e in session.scalars(select(AlarmEpisode)))

    await kernel.outbox.flush()
    await _wait_for(lambda: pipeline.beds == {})
    await pipeline.commit()
    await _wait_for(cleared)


async def test_each_closed_hour_of_sepsis_risk_is_recorded_for_the_ai_platform(
    kernel: Kernel, demo: Demo, db: Session
) -> None:
    from functools import partial

    from tianfu.core.model_outputs.models import ModelOutput
    from tianfu.monitoring.module import active_sepsis_model

    bed = demo.bed("CARD1-01")
    db.add(
        MonitoringDevice(identifier="MON-1", label="m", bed_id=bed.id, organization_id=bed.organization_id)
    )
    db.commit()
    await kernel.start()
    worker = Pipeline(kernel, SETTINGS, model_source=partial(active_sepsis_model, kernel))
    await worker.start()
    try:
        assert worker.model_version == "1.0.0"
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        for minutes in (5, 65):  # a report in the next hour closes the first one
            await send(kernel, report(NORMAL, hour + timedelta(minutes=minutes)))
        await _wait_for(lambda: worker.processed >= 2)
        await worker.commit()
    finally:
        await worker.stop()
        await kernel.stop()
    recorded = db.scalars(select(ModelOutput).where(ModelOutput.model_name == "sepsis")).all()
    assert len(recorded) == 1
    assert recorded[0].model_version == "1.0.0"
    assert recorded[0].patient_id == demo.patient("李建国").id
    assert recorded[0].input_features["HR"] == 72
    assert 0 <= recorded[0].output["risk"] <= 1
    hourly = db.scalars(select(VitalSample).where(VitalSample.resolution == "hour")).all()
    assert [(h.observed_at, h.heart_rate) for h in hourly] == [(hour, 72)]
    assert hourly[0].sepsis_risk == recorded[0].output["risk"]


def test_a_bed_remembers_its_last_message_ids_and_forgets_older_ones() -> None:
    from tianfu.monitoring.pipeline import RecentIds

    recent = RecentIds(3)
    assert [recent.add(i) for i in ("a", "b", "a", "c", "d")] == [True, True, False, True, True]
    assert recent.add("a")  # the oldest was forgotten once a fourth arrived
    assert not recent.add("d")


async def test_placements_are_checked_against_the_database_in_one_query(
    pipeline: Pipeline, kernel: Kernel, demo: Demo, db: Session
) -> None:
    """A missed announcement of a device moving misleads only until the periodic check, which renews the
    placements the database confirms without a lookup per device."""
    await send(kernel, report(NORMAL, datetime.now(UTC)))
    await _wait_for(lambda: pipeline.processed >= 1)
    placed = pipeline._placements["MON-1"]
    placed.fetched -= 100
    await pipeline.refresh_placements()
    assert pipeline._placements["MON-1"] is placed
    assert time.monotonic() - placed.fetched < 5  # renewed
    device = db.scalars(select(MonitoringDevice).where(MonitoringDevice.identifier == "MON-1")).one()
    device.bed_id = demo.bed("CARD1-02").id  # moved, and nobody said so on the bus
    db.commit()
    await pipeline.refresh_placements()
    assert "MON-1" not in pipeline._placements  # looked up afresh at its next report
    await send(kernel, report(NORMAL, datetime.now(UTC), message="after-move"))
    await _wait_for(lambda: pipeline.processed >= 2)
    assert pipeline._placements["MON-1"].bed_id == demo.bed("CARD1-02").id


async def test_closed_hours_are_scored_a_few_dozen_per_commit(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the top of the hour every bed closes one: scored a few dozen at a time, none left out."""
    from tianfu.monitoring.pipeline import CLOSED_HOURS_PER_COMMIT

    batches: list[int] = []

    async def score(closed: list[Any]) -> tuple[list[Any], list[Any]]:
        batches.append(len(closed))
        return [], []

    monkeypatch.setattr(pipeline, "_score_closed_hours", score)
    pipeline._closed_hours.extend([None] * (2 * CLOSED_HOURS_PER_COMMIT + 10))  # type: ignore[list-item]
    for _ in range(3):
        await pipeline.commit()
    assert batches == [CLOSED_HOURS_PER_COMMIT, CLOSED_HOURS_PER_COMMIT, 10]
