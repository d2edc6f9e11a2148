"""Alarm burden on recorded patients: alarms per bed per day, with and without delays and hysteresis.

Each recording is one bed. Its rows are replayed through the alarm engine at their own pace (a MIMIC
numerics row holds for its minute, a PhysioNet row for its hour: sample and hold), together with the
partial NEWS2 of each row (consciousness alert and room air assumed, as the data lack both). The same
replay runs twice: with the deployment's condition delays and hysteresis, and with every delay, clearing
margin and hold time set to zero. The denominator is the recorded time (beds × days). No-data alarms
would only measure the recordings' sampling interval, so the replay watches no parameter for silence;
sensor-off and implausible values still raise technical alarms.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from tianfu.monitoring.alarms import (
    AlarmConfig,
    AlarmEngine,
    AlarmEvent,
    ConditionTiming,
    ConfigureBed,
    EndMonitoring,
    EventKind,
    News2Scored,
    Tick,
    VitalSample,
    alarm_burden,
)
from tianfu.monitoring.replay import Recording
from tianfu.monitoring.scores import news2_from_mapping
from tianfu.monitoring.vitals import TO_ENGINE

START = datetime(2026, 1, 1, tzinfo=UTC)
TO_NEWS2 = {
    "heart_rate": "pulse",
    "spo2": "spo2",
    "respiratory_rate": "respiratory_rate",
    "systolic_bp": "systolic_bp",
    "temperature": "temperature",
}


def configurations() -> dict[str, AlarmConfig]:
    deployed = AlarmConfig(no_data_timeouts={})
    plain = replace(deployed, timings={p: ConditionTiming() for p in deployed.timings})
    return {"with_delay_and_hysteresis": deployed, "without": plain}


def _row_news2(values: dict[str, float]) -> tuple[int, bool] | None:
    observation: dict[str, Any] = {TO_NEWS2[k]: v for k, v in values.items() if k in TO_NEWS2}
    if not observation:
        return None
    try:
        score = news2_from_mapping(observation | {"consciousness": "A", "on_oxygen": False})
    except ValueError:  # a sensor-off or implausible value: that row has no score
        return None
    return score.total, score.red_score


def replay_bed(
    engine: AlarmEngine, bed: str, recording: Recording, start: datetime
) -> tuple[timedelta, list[AlarmEvent]]:
    """Feed one recording to the engine as bed ``bed``: the time it covered, and what the engine said."""
    step = timedelta(seconds=recording.interval_s)
    events = engine.process(ConfigureBed(start, bed))
    at = start
    for values in recording.rows:
        if "heart_rate" not in values and "pulse_rate" in values:
            values = values | {"heart_rate": values["pulse_rate"]}
        for name, value in values.items():
            parameter = TO_ENGINE.get(name)
            if parameter is not None:
                events += engine.process(VitalSample(at, bed, parameter, value))
        score = _row_news2(values)
        if score is not None:
            events += engine.process(News2Scored(at, bed, score[0], score[1]))
        # Delays and hold times are seconds long: let them run out within the row's interval.
        events += engine.process(Tick(at + min(step / 2, timedelta(minutes=1))))
        at += step
    events += engine.process(EndMonitoring(at, bed, "system:replay"))
    return at - start, events


def measure(recordings: Iterable[Recording], progress: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Alarms per bed-day for each configuration over the recordings."""
    engines = {name: AlarmEngine(config) for name, config in configurations().items()}
    raised: dict[str, list[AlarmEvent]] = {name: [] for name in engines}
    covered = timedelta(0)
    count = 0
    for count, recording in enumerate(recordings, start=1):
        for name, engine in engines.items():
            duration, events = replay_bed(engine, f"bed-{count}", recording, START)
            raised[name] += [e for e in events if e.kind is EventKind.RAISED]
        covered += duration
        if progress is not None and count % 500 == 0:
            progress.write(f"\r{count} recordings replayed")
            progress.flush()
    if progress is not None:
        progress.write(f"\r{count} recordings replayed\n")
    bed_days = covered / timedelta(days=1)
    result: dict[str, Any] = {"recordings": count, "bed_days": round(bed_days, 1)}
    for name, events in raised.items():
        if not bed_days:
            result[name] = None
            continue
        burden = alarm_burden(events, bed_days)
        result[name] = {
            "alarms": burden.alarms,
            "per_bed_day": round(burden.alarms_per_bed_day, 1),
            "by_priority": {p.value: round(v, 1) for p, v in burden.per_bed_day_by_priority.items()},
            "by_category": {c: round(v, 1) for c, v in burden.per_bed_day_by_category.items()},
        }
    return result
