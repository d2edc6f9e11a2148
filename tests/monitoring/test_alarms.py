"""The alarm engine: each feature by example, then its safety invariants over random event sequences.

Invariants (hypothesis, checked against an independent reference model of when each condition holds):
an alarm is never lost, never cleared while its condition holds, raised once per episode, a latched
high-priority alarm is never cleared without an acknowledgement, and a snapshot resumes exactly.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tianfu.monitoring.alarms import (
    ADULT_LIMITS,
    DEFAULT_TIMINGS,
    PAEDIATRIC_LIMITS,
    Acknowledge,
    ActiveAlarm,
    AlarmConfig,
    AlarmEngine,
    AlarmEvent,
    ConditionTiming,
    ConfigureBed,
    EndMonitoring,
    EngineInput,
    EventKind,
    LimitRule,
    News2Scored,
    PauseAudio,
    Population,
    Priority,
    TechnicalCondition,
    Tick,
    VitalSample,
    VitalSamples,
    alarm_burden,
    condition_category,
)
from tianfu.monitoring.scores import RiskBand, news2_band
from tianfu.monitoring.vitals import Parameter, Validity, classify_measurement, round_for_banding

T0 = datetime(2025, 6, 11, 8, 0, tzinfo=UTC)
SPO2, PULSE, SBP, RR, TEMP = (
    Parameter.SPO2,
    Parameter.PULSE,
    Parameter.SYSTOLIC_BP,
    Parameter.RESPIRATORY_RATE,
    Parameter.TEMPERATURE,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Ward:
    """Test driver: one engine, a configured bed, and everything the engine returned so far."""

    def __init__(self, config: AlarmConfig | None = None, bed: str = "b1", **configure: Any) -> None:
        self.engine = AlarmEngine(config)
        self.history: list[AlarmEvent] = []
        configure.setdefault("no_data_timeouts", {})  # examples below watch no-data only where they mean to
        self.feed(ConfigureBed(T0, bed, **configure))

    def feed(self, event: EngineInput) -> list[AlarmEvent]:
        out = self.engine.process(event)
        self.history += out
        return out

    def sample(self, second: float, parameter: Parameter, value: float, bed: str = "b1") -> list[AlarmEvent]:
        return self.feed(VitalSample(at(second), bed, parameter, value))

    def stream(
        self, parameter: Parameter, values: Iterable[float], start: float = 0, every: float = 1
    ) -> None:
        for index, value in enumerate(values):
            self.sample(start + index * every, parameter, value)

    def tick(self, second: float) -> list[AlarmEvent]:
        return self.feed(Tick(at(second)))

    def ticks(self, start: float, end: float, every: float = 1) -> None:
        second = start
        while second <= end:
            self.tick(second)
            second += every

    def events(self, condition: str, kind: EventKind | None = None) -> list[AlarmEvent]:
        return [e for e in self.history if e.condition == condition and (kind is None or e.kind is kind)]

    def active(self, condition: str) -> ActiveAlarm | None:
        found = [a for a in self.engine.active_alarms() if a.condition == condition]
        assert len(found) <= 1
        return found[0] if found else None


# --------------------------------------------------------------------------------------------------
# Alarm-condition delay


def test_a_spo2_dip_shorter_than_its_15_s_delay_does_not_alarm() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 14 + [96] * 10)
    assert ward.history == []


def test_a_spo2_dip_held_for_its_delay_raises_once_at_the_delay() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 40)
    raised = ward.events("limit:spo2_low")
    assert [(e.kind, e.at) for e in raised] == [(EventKind.RAISED, at(15))]
    assert raised[0].priority is Priority.MEDIUM
    assert raised[0].tier == "bedside_nurse"
    assert raised[0].value == 88
    assert raised[0].episode_id == "b1/limit:spo2_low/1"


def test_pulse_uses_a_10_s_delay_and_nibp_none() -> None:
    ward = Ward()
    ward.stream(PULSE, [45] * 12)
    assert [e.at for e in ward.events("limit:pulse_low", EventKind.RAISED)] == [at(10)]
    out = ward.sample(20, SBP, 85)
    assert [(e.kind, e.condition, e.at) for e in out] == [(EventKind.RAISED, "limit:systolic_bp_low", at(20))]


def test_a_delay_is_timed_by_ticks_when_no_sample_arrives() -> None:
    ward = Ward()
    ward.sample(0, SPO2, 88)
    assert ward.tick(14) == []
    assert [e.kind for e in ward.tick(15)] == [EventKind.RAISED]


def test_decimal_readings_are_rounded_half_up_before_comparison() -> None:
    ward = Ward()
    ward.sample(0, SBP, 89.5)  # rounds to 90: not below the limit of 90
    assert ward.history == []
    ward.sample(1, SBP, 89.4)  # rounds to 89
    assert [e.condition for e in ward.history] == ["limit:systolic_bp_low"]


# --------------------------------------------------------------------------------------------------
# Hysteresis


def test_a_limit_alarm_clears_only_2_percent_inside_the_limit_held_for_10_s() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 20)
    ward.stream(SPO2, [90, 91] * 30, start=20)  # dead band for a minute: stays, without holding
    assert ward.events("limit:spo2_low", EventKind.CLEARED) == []
    alarm = ward.active("limit:spo2_low")
    assert alarm is not None
    assert not alarm.condition_holds
    ward.stream(SPO2, [92] * 10, start=80)  # 80..89: 9 s inside by the margin
    assert ward.events("limit:spo2_low", EventKind.CLEARED) == []
    out = ward.sample(90, SPO2, 92)
    assert [(e.kind, e.at) for e in out] == [(EventKind.CLEARED, at(90))]
    assert ward.active("limit:spo2_low") is None


def test_returning_below_the_limit_before_the_hold_ends_keeps_the_same_episode() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 20 + [95] * 5 + [88] * 20)
    assert len(ward.events("limit:spo2_low", EventKind.RAISED)) == 1
    assert ward.events("limit:spo2_low", EventKind.CLEARED) == []


def no_delay_no_hysteresis() -> AlarmConfig:
    return AlarmConfig(timings={parameter: ConditionTiming() for parameter in DEFAULT_TIMINGS})


def test_hysteresis_stops_chattering_around_a_limit() -> None:
    trace = [88] * 20 + [89, 90] * 150
    damped = Ward()
    damped.stream(SPO2, trace)
    raw = Ward(no_delay_no_hysteresis())
    raw.stream(SPO2, trace)
    assert len(damped.events("limit:spo2_low", EventKind.RAISED)) == 1
    assert len(raw.events("limit:spo2_low", EventKind.RAISED)) == 150  # every 89 after a 90


def test_temperature_clears_with_a_tenth_degree_margin() -> None:
    ward = Ward()
    ward.sample(0, TEMP, 39.2)
    ward.sample(60, TEMP, 38.9)  # inside, but not by 0.2 °C
    assert ward.events("limit:temperature_high", EventKind.CLEARED) == []
    ward.sample(120, TEMP, 38.8)
    assert len(ward.events("limit:temperature_high", EventKind.CLEARED)) == 1


# --------------------------------------------------------------------------------------------------
# Latching, non-latching, acknowledgement


def test_a_high_priority_alarm_latches_until_acknowledged() -> None:
    ward = Ward()
    ward.stream(SPO2, [80] * 20)
    assert {(e.condition, e.priority) for e in ward.history} == {
        ("limit:spo2_low", Priority.MEDIUM),
        ("limit:spo2_low_critical", Priority.HIGH),
    }
    ward.stream(SPO2, [97] * 15, start=20)
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.CLEARED)] == [at(30)]  # non-latching
    assert [e.at for e in ward.events("limit:spo2_low_critical", EventKind.LATCHED)] == [at(30)]
    assert ward.events("limit:spo2_low_critical", EventKind.CLEARED) == []
    ward.tick(30)
    latched = ward.active("limit:spo2_low_critical")
    assert latched is not None
    assert latched.latched
    assert not latched.condition_holds
    out = ward.feed(Acknowledge(at(40), latched.episode_id, "nurse.li"))
    assert [(e.kind, e.user, e.at) for e in out] == [
        (EventKind.ACKNOWLEDGED, "nurse.li", at(40)),
        (EventKind.CLEARED, "nurse.li", at(40)),
    ]
    assert ward.engine.active_alarms() == []


def test_acknowledging_while_the_condition_holds_keeps_the_alarm_until_it_resolves() -> None:
    ward = Ward()
    ward.stream(SPO2, [80] * 20)
    critical = ward.active("limit:spo2_low_critical")
    medium = ward.active("limit:spo2_low")
    assert critical is not None
    assert medium is not None
    for alarm in (critical, medium):
        assert [e.kind for e in ward.feed(Acknowledge(at(20), alarm.episode_id, "nurse.li"))] == [
            EventKind.ACKNOWLEDGED
        ]
    acknowledged = ward.active("limit:spo2_low_critical")
    assert acknowledged is not None
    assert acknowledged.acknowledged_by == "nurse.li"
    assert acknowledged.acknowledged_at == at(20)
    ward.stream(SPO2, [80] * 10 + [97] * 11, start=20)
    assert ward.events("limit:spo2_low_critical", EventKind.LATCHED) == []  # already acknowledged
    assert [e.at for e in ward.events("limit:spo2_low_critical", EventKind.CLEARED)] == [at(40)]
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.CLEARED)] == [at(40)]


def test_acknowledging_twice_or_an_unknown_episode_does_nothing() -> None:
    ward = Ward()
    ward.sample(0, SBP, 85)
    alarm = ward.active("limit:systolic_bp_low")
    assert alarm is not None
    assert len(ward.feed(Acknowledge(at(1), alarm.episode_id, "nurse.li"))) == 1
    assert ward.feed(Acknowledge(at(2), alarm.episode_id, "nurse.wang")) == []
    assert ward.feed(Acknowledge(at(3), "b1/limit:nothing/99", "nurse.li")) == []
    after = ward.active("limit:systolic_bp_low")
    assert after is not None
    assert after.acknowledged_by == "nurse.li"


def test_a_new_episode_after_clearing_gets_a_new_id_and_a_new_raise() -> None:
    ward = Ward()
    ward.sample(0, SBP, 85)
    ward.sample(600, SBP, 120)
    ward.sample(1200, SBP, 85)
    raised = ward.events("limit:systolic_bp_low", EventKind.RAISED)
    assert [e.episode_id for e in raised] == ["b1/limit:systolic_bp_low/1", "b1/limit:systolic_bp_low/2"]
    assert [e.kind for e in ward.events("limit:systolic_bp_low") if e.kind is not EventKind.ESCALATED] == [
        EventKind.RAISED,
        EventKind.CLEARED,
        EventKind.RAISED,
    ]


# --------------------------------------------------------------------------------------------------
# Escalation


def escalations(ward: Ward, condition: str) -> list[tuple[datetime, str]]:
    return [(e.at, e.tier) for e in ward.events(condition, EventKind.ESCALATED)]


def test_an_unacknowledged_high_alarm_escalates_every_60_s_up_the_tiers() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)  # high (below 70) and medium (below 90) at once, no delay for NIBP
    ward.ticks(1, 600)
    assert escalations(ward, "limit:systolic_bp_low_critical") == [
        (at(60), "charge_nurse"),
        (at(120), "physician"),
        (at(180), "rapid_response_team"),
    ]
    assert escalations(ward, "limit:systolic_bp_low") == [(at(300), "charge_nurse"), (at(600), "physician")]


def test_escalation_catches_up_after_a_gap_one_event_per_tier() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    out = [e for e in ward.tick(200) if e.condition == "limit:systolic_bp_low_critical"]
    assert [(e.kind, e.tier) for e in out] == [
        (EventKind.ESCALATED, "charge_nurse"),
        (EventKind.ESCALATED, "physician"),
        (EventKind.ESCALATED, "rapid_response_team"),
    ]


def test_low_priority_alarms_do_not_escalate() -> None:
    ward = Ward()
    ward.sample(0, SPO2, 0)
    ward.ticks(1, 3600, every=30)
    assert [e.kind for e in ward.events("sensor_off:spo2")] == [EventKind.RAISED]
    assert ward.events("sensor_off:spo2")[0].priority is Priority.LOW


def test_acknowledgement_stops_escalation() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    alarm = ward.active("limit:systolic_bp_low_critical")
    assert alarm is not None
    ward.tick(61)
    ward.feed(Acknowledge(at(70), alarm.episode_id, "nurse.li"))
    ward.ticks(71, 600, every=10)
    assert escalations(ward, "limit:systolic_bp_low_critical") == [(at(61), "charge_nurse")]
    acknowledged = ward.active("limit:systolic_bp_low_critical")
    assert acknowledged is not None
    assert acknowledged.tier == "charge_nurse"


def test_escalation_timers_are_configurable() -> None:
    config = AlarmConfig(
        escalation_after={Priority.HIGH: timedelta(seconds=30), Priority.MEDIUM: None, Priority.LOW: None},
        tiers=("nurse", "doctor"),
    )
    ward = Ward(config)
    ward.sample(0, SBP, 65)
    ward.ticks(5, 400, every=5)
    assert escalations(ward, "limit:systolic_bp_low_critical") == [(at(30), "doctor")]
    assert escalations(ward, "limit:systolic_bp_low") == []


# --------------------------------------------------------------------------------------------------
# Audio pause


def test_a_pause_silences_and_suspends_escalation_then_reraises() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    alarm = ward.active("limit:systolic_bp_low_critical")
    assert alarm is not None
    out = ward.feed(PauseAudio(at(30), alarm.episode_id, "nurse.li", timedelta(minutes=2)))
    assert [(e.kind, e.user, e.until) for e in out] == [(EventKind.PAUSED, "nurse.li", at(150))]
    paused = ward.active("limit:systolic_bp_low_critical")
    assert paused is not None
    assert paused.paused_until == at(150)
    ward.ticks(31, 149)
    assert escalations(ward, "limit:systolic_bp_low_critical") == []
    assert [e.kind for e in ward.tick(150) if e.condition == "limit:systolic_bp_low_critical"] == [
        EventKind.RERAISED
    ]
    ward.ticks(151, 210)
    assert escalations(ward, "limit:systolic_bp_low_critical") == [(at(210), "charge_nurse")]


def test_a_pause_is_time_limited() -> None:
    ward = Ward()
    ward.sample(0, SBP, 85)
    alarm = ward.active("limit:systolic_bp_low")
    assert alarm is not None
    with pytest.raises(ValueError, match="at most"):
        ward.feed(PauseAudio(at(1), alarm.episode_id, "nurse.li", timedelta(minutes=4)))
    with pytest.raises(ValueError, match="positive"):
        PauseAudio(at(1), alarm.episode_id, "nurse.li", timedelta(0))


def test_a_condition_that_ends_during_a_pause_clears_without_reraise() -> None:
    ward = Ward()
    ward.sample(0, SBP, 85)
    alarm = ward.active("limit:systolic_bp_low")
    assert alarm is not None
    ward.feed(PauseAudio(at(10), alarm.episode_id, "nurse.li", timedelta(minutes=2)))
    ward.sample(40, SBP, 120)
    ward.ticks(41, 300, every=10)
    assert [e.kind for e in ward.events("limit:systolic_bp_low")] == [
        EventKind.RAISED,
        EventKind.PAUSED,
        EventKind.CLEARED,
    ]


def test_pausing_an_acknowledged_alarm_does_nothing_and_acknowledging_ends_a_pause() -> None:
    ward = Ward()
    ward.sample(0, SBP, 85)
    alarm = ward.active("limit:systolic_bp_low")
    assert alarm is not None
    ward.feed(PauseAudio(at(1), alarm.episode_id, "nurse.li", timedelta(minutes=1)))
    ward.feed(Acknowledge(at(2), alarm.episode_id, "nurse.li"))
    acknowledged = ward.active("limit:systolic_bp_low")
    assert acknowledged is not None
    assert acknowledged.paused_until is None
    assert ward.feed(PauseAudio(at(3), alarm.episode_id, "nurse.li", timedelta(minutes=1))) == []
    ward.ticks(4, 200, every=10)
    assert ward.events("limit:systolic_bp_low", EventKind.RERAISED) == []


def test_a_latched_alarm_reraises_after_its_pause_because_it_still_awaits_acknowledgement() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    ward.sample(10, SBP, 120)
    alarm = ward.active("limit:systolic_bp_low_critical")
    assert alarm is not None
    assert alarm.latched
    ward.feed(PauseAudio(at(20), alarm.episode_id, "nurse.li", timedelta(minutes=1)))
    assert [e.kind for e in ward.tick(80) if e.condition == "limit:systolic_bp_low_critical"] == [
        EventKind.RERAISED
    ]


# --------------------------------------------------------------------------------------------------
# NEWS2 alarms


def news2_at(ward: Ward, second: float, total: int, red: bool = False) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.condition) for e in ward.feed(News2Scored(at(second), "b1", total, red))]


def test_news2_band_rises_raise_medium_then_high() -> None:
    ward = Ward()
    assert news2_at(ward, 0, 3) == []
    assert news2_at(ward, 60, 3, red=True) == [(EventKind.RAISED, "news2:medium")]
    assert news2_at(ward, 120, 6, red=True) == []  # same episode
    assert sorted(news2_at(ward, 180, 7)) == [
        (EventKind.CLEARED, "news2:medium"),
        (EventKind.RAISED, "news2:high"),
    ]
    assert news2_at(ward, 240, 2) == [(EventKind.LATCHED, "news2:high")]
    high = ward.active("news2:high")
    assert high is not None
    assert high.priority is Priority.HIGH
    assert [e.value for e in ward.events("news2:high", EventKind.RAISED)] == [7]


def test_news2_five_without_a_red_score_is_medium() -> None:
    ward = Ward()
    assert news2_at(ward, 0, 5) == [(EventKind.RAISED, "news2:medium")]
    assert news2_at(ward, 60, 4) == [(EventKind.CLEARED, "news2:medium")]


def test_news2_escalation_uses_the_document_timers() -> None:
    ward = Ward()
    news2_at(ward, 0, 5)
    ward.ticks(60, 3600, every=60)
    assert escalations(ward, "news2:medium") == [(at(3600), "charge_nurse")]
    ward = Ward()
    news2_at(ward, 0, 8)
    ward.ticks(60, 1800, every=60)
    assert escalations(ward, "news2:high") == [(at(1800), "charge_nurse")]


def test_news2_low_advisory_is_off_by_default_and_can_be_enabled() -> None:
    ward = Ward()
    assert news2_at(ward, 0, 2) == []
    ward = Ward(AlarmConfig(news2_advisory=True))
    assert news2_at(ward, 0, 0) == []
    assert news2_at(ward, 60, 2) == [(EventKind.RAISED, "news2:low")]
    assert news2_at(ward, 120, 5) == [(EventKind.CLEARED, "news2:low"), (EventKind.RAISED, "news2:medium")]
    assert ward.events("news2:low")[0].priority is Priority.LOW


# --------------------------------------------------------------------------------------------------
# Technical alarms


def test_no_data_for_more_than_60_s_raises_a_technical_alarm_per_parameter() -> None:
    ward = Ward(no_data_timeouts=None)  # the deployment default: HR, SpO2, RR watched
    for parameter, value in ((PULSE, 70), (SPO2, 97), (RR, 16)):
        ward.sample(0, parameter, value)
    assert ward.tick(60) == []
    out = ward.tick(61)
    assert sorted((e.kind, e.condition, e.priority) for e in out) == [
        (EventKind.RAISED, "no_data:pulse", Priority.MEDIUM),
        (EventKind.RAISED, "no_data:respiratory_rate", Priority.MEDIUM),
        (EventKind.RAISED, "no_data:spo2", Priority.MEDIUM),
    ]
    assert [(e.kind, e.condition) for e in ward.sample(62, PULSE, 70)] == [
        (EventKind.CLEARED, "no_data:pulse")
    ]


def test_a_device_that_never_reports_raises_no_data() -> None:
    ward = Ward(no_data_timeouts={SPO2: timedelta(seconds=30)})
    assert ward.tick(30) == []
    assert [e.condition for e in ward.tick(31)] == ["no_data:spo2"]


@pytest.mark.parametrize("sentinel", [0, -100, 8388607, float("nan")])
def test_sensor_off_values_raise_a_technical_alarm_never_a_physiological_one(sentinel: float) -> None:
    ward = Ward(no_data_timeouts={PULSE: timedelta(seconds=60)})
    ward.stream(PULSE, [sentinel] * 70)
    conditions = [(e.kind, e.condition, e.at) for e in ward.history]
    assert conditions == [
        (EventKind.RAISED, "sensor_off:pulse", at(0)),
        (EventKind.RAISED, "no_data:pulse", at(61)),  # no *valid* data: the patient is unmonitored
    ]
    assert [(e.kind, e.condition) for e in ward.sample(70, PULSE, 70)] == [
        (EventKind.CLEARED, "no_data:pulse"),
        (EventKind.CLEARED, "sensor_off:pulse"),
    ]


def test_implausible_values_raise_a_technical_alarm_never_a_physiological_one() -> None:
    ward = Ward()
    ward.stream(PULSE, [400] * 30)
    assert [(e.kind, e.condition, e.priority) for e in ward.history] == [
        (EventKind.RAISED, "implausible:pulse", Priority.LOW)
    ]


def test_an_invalid_reading_freezes_a_raised_alarm_and_cancels_a_pending_one() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 20)
    ward.stream(SPO2, [0] * 60, start=20)
    frozen = ward.active("limit:spo2_low")
    assert frozen is not None
    assert ward.events("limit:spo2_low", EventKind.CLEARED) == []
    ward.stream(SPO2, [97] * 11, start=80)
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.CLEARED)] == [at(90)]

    ward = Ward()
    ward.stream(SPO2, [88] * 10 + [0] + [88] * 20)  # the dip restarts at 11 s
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.RAISED)] == [at(26)]


# --------------------------------------------------------------------------------------------------
# Per-patient limits, populations, beds


def test_per_patient_limits_override_and_disable_rules() -> None:
    ward = Ward(limit_overrides={"spo2_low": 86})  # e.g. a Scale 2 patient
    ward.stream(SPO2, [88] * 30)
    assert ward.history == []
    ward.stream(SPO2, [85] * 20, start=30)
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.RAISED)] == [at(45)]

    ward = Ward(limit_overrides={"spo2_low": None})
    ward.stream(SPO2, [88] * 30)
    assert ward.history == []


def test_changing_a_limit_re_evaluates_the_active_alarm() -> None:
    ward = Ward()
    ward.stream(SPO2, [88] * 20)
    ward.feed(
        ConfigureBed(at(20), "b1", limit_overrides={"spo2_low": 86}, no_data_timeouts={}, user="dr.zhang")
    )
    ward.stream(SPO2, [88] * 11, start=20)  # 88 is now 2 above the limit: inside by the margin
    assert [e.at for e in ward.events("limit:spo2_low", EventKind.CLEARED)] == [at(30)]


def test_limit_overrides_are_validated() -> None:
    engine = AlarmEngine()
    with pytest.raises(ValueError, match=r"unknown limit rule.*spo2_lo"):
        engine.process(ConfigureBed(T0, "b1", limit_overrides={"spo2_lo": 88}))
    with pytest.raises(ValueError, match="must be a number"):
        engine.process(ConfigureBed(T0, "b1", limit_overrides={"spo2_low": "88"}))  # type: ignore[dict-item]


def test_paediatric_defaults_differ_from_adult() -> None:
    child = Ward(population=Population.PAEDIATRIC)
    child.stream(PULSE, [65] * 15)
    assert [e.condition for e in child.history] == ["limit:pulse_low"]
    adult = Ward()
    adult.stream(PULSE, [65] * 15)
    assert adult.history == []


def test_default_tables_name_the_same_rules_for_every_population() -> None:
    assert [r.name for r in ADULT_LIMITS] == [r.name for r in PAEDIATRIC_LIMITS]
    adult = {r.name: r for r in ADULT_LIMITS}
    assert adult["spo2_low_critical"].limit == 85
    assert adult["spo2_low_critical"].priority is Priority.HIGH
    assert adult["pulse_low_critical"].limit == 40
    assert adult["pulse_high_critical"].limit == 150
    assert {r.parameter for r in ADULT_LIMITS} <= set(DEFAULT_TIMINGS)


def test_an_unconfigured_bed_is_monitored_with_adult_defaults() -> None:
    engine = AlarmEngine()
    out = []
    for second in range(16):
        out += engine.process(VitalSample(at(second), "b9", SPO2, 80))
    assert {(e.bed, e.condition) for e in out} == {
        ("b9", "limit:spo2_low"),
        ("b9", "limit:spo2_low_critical"),
    }


def test_late_inputs_are_applied_at_the_engine_clock_and_superseded_readings_ignored() -> None:
    ward = Ward()
    ward.tick(100)
    out = ward.feed(VitalSample(at(50), "b1", SBP, 85))  # an NIBP reading that arrives late
    assert [(e.condition, e.at) for e in out] == [("limit:systolic_bp_low", at(100))]
    ward.sample(110, SBP, 120)
    assert ward.feed(VitalSample(at(105), "b1", SBP, 60)) == []  # older than the reading already applied


def test_ending_monitoring_clears_every_alarm_with_the_user_and_ignores_later_data() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    out = ward.feed(EndMonitoring(at(30), "b1", "nurse.li"))
    assert sorted((e.kind, e.condition, e.user, e.detail) for e in out) == [
        (EventKind.CLEARED, "limit:systolic_bp_low", "nurse.li", "monitoring ended"),
        (EventKind.CLEARED, "limit:systolic_bp_low_critical", "nurse.li", "monitoring ended"),
    ]
    assert ward.sample(40, SBP, 60) == []
    assert ward.tick(400) == []
    assert ward.engine.active_alarms() == []
    assert ward.feed(EndMonitoring(at(401), "b1", "nurse.li")) == []
    ward.feed(ConfigureBed(at(500), "b1", no_data_timeouts={}))
    assert [e.episode_id for e in ward.sample(501, SBP, 85)] == ["b1/limit:systolic_bp_low/3"]


def test_active_alarms_are_ordered_by_priority_then_age_and_filterable_by_bed() -> None:
    engine = AlarmEngine()
    engine.process(VitalSample(at(0), "b1", SBP, 85))
    engine.process(VitalSample(at(1), "b2", SBP, 65))
    ordered = [(a.bed, a.condition) for a in engine.active_alarms()]
    assert ordered == [
        ("b2", "limit:systolic_bp_low_critical"),
        ("b1", "limit:systolic_bp_low"),
        ("b2", "limit:systolic_bp_low"),
    ]
    assert [a.bed for a in engine.active_alarms("b1")] == ["b1"]


# --------------------------------------------------------------------------------------------------
# Inputs, outputs, snapshots


def test_a_report_raises_what_its_samples_would_one_by_one_in_condition_order() -> None:
    config = no_delay_no_hysteresis()
    one_by_one, together = Ward(config), Ward(config)
    values = ((SPO2, 80), (PULSE, 150), (SBP, 120))
    separate = [event for parameter, value in values for event in one_by_one.sample(1, parameter, value)]
    joint = together.feed(VitalSamples(at(1), "b1", values))

    def what(events: Iterable[AlarmEvent]) -> list[tuple[Any, ...]]:  # episode ids number in order of raise
        return sorted((e.condition, e.kind, e.priority, e.value) for e in events)

    assert what(separate) == what(joint)
    assert [e.condition for e in joint] == sorted(e.condition for e in joint)
    assert {e.condition for e in joint} >= {"limit:spo2_low", "limit:pulse_high"}
    active = [(a.condition, a.priority) for a in one_by_one.engine.active_alarms()]
    assert [(a.condition, a.priority) for a in together.engine.active_alarms()] == active


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Tick(datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="charted"):
        VitalSample(T0, "b1", Parameter.CONSCIOUSNESS, 1)
    with pytest.raises(ValueError, match="must be a number"):
        VitalSample(T0, "b1", PULSE, "70")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one per parameter"):
        VitalSamples(T0, "b1", ((PULSE, 70), (PULSE, 71)))
    with pytest.raises(ValueError, match="at least one"):
        VitalSamples(T0, "b1", ())
    with pytest.raises(ValueError, match="charted"):
        VitalSamples(T0, "b1", ((PULSE, 70), (Parameter.CONSCIOUSNESS, 1)))
    with pytest.raises(ValueError, match="0-20"):
        News2Scored(T0, "b1", 21, True)
    with pytest.raises(ValueError, match="user"):
        Acknowledge(T0, "x", "")
    with pytest.raises(ValueError, match="user"):
        EndMonitoring(T0, "b1", "")


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="tier"):
        AlarmConfig(tiers=())
    rule = LimitRule("x", PULSE, ADULT_LIMITS[0].direction, 40, Priority.HIGH)
    with pytest.raises(ValueError, match="duplicate"):
        AlarmConfig(limit_tables={Population.ADULT: (rule, rule)})
    with pytest.raises(ValueError, match="positive"):
        AlarmConfig(escalation_after={Priority.HIGH: timedelta(0)})
    with pytest.raises(ValueError, match="max_pause"):
        AlarmConfig(max_pause=timedelta(0))


def test_alarm_events_round_trip_through_json() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)
    alarm = ward.active("limit:systolic_bp_low_critical")
    assert alarm is not None
    ward.feed(PauseAudio(at(5), alarm.episode_id, "nurse.li", timedelta(minutes=1)))
    for event in ward.history:
        assert AlarmEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    assert condition_category("limit:spo2_low") == "physiological"
    assert condition_category("news2:high") == "score"
    assert condition_category("no_data:spo2") == "technical"


def scenario() -> list[EngineInput]:
    events: list[EngineInput] = [
        ConfigureBed(T0, "b1"),
        ConfigureBed(T0, "b2", population=Population.PAEDIATRIC),
    ]
    for second in range(0, 400, 2):
        events.append(VitalSample(at(second), "b1", SPO2, 80 if second < 100 else 97))
        events.append(VitalSample(at(second), "b2", PULSE, 185 if 50 < second < 300 else 100))
        events.append(Tick(at(second + 1)))
    events.insert(200, News2Scored(at(66), "b1", 9, True))
    return events


def test_a_snapshot_resumes_exactly_where_the_engine_was() -> None:
    events = scenario()
    reference = AlarmEngine()
    expected = [reference.process(event) for event in events]
    for cut in (0, 1, 57, 200, 401, len(events) - 1):
        engine = AlarmEngine()
        outputs = [engine.process(event) for event in events[:cut]]
        engine = AlarmEngine.from_dict(json.loads(json.dumps(engine.to_dict())))
        outputs += [engine.process(event) for event in events[cut:]]
        assert outputs == expected
        assert engine.to_dict() == reference.to_dict()


def test_a_snapshot_taken_bed_by_bed_keeps_each_bed_as_it_was_when_taken() -> None:
    """The pipeline saves thousands of beds a few hundred at a time, between reports."""
    events = scenario()
    engine = AlarmEngine()
    for event in events[:201]:
        engine.process(event)
    b1_then = engine.to_dict()["beds"]["b1"]
    taken = engine.beds_to_dict(["b1", "gone"])  # a bed no longer there is skipped
    assert set(taken) == {"b1"}
    for event in events[201:401]:
        engine.process(event)
    snapshot = json.loads(json.dumps(engine.to_dict(taken)))
    assert snapshot["beds"]["b1"] == b1_then != engine.to_dict()["beds"]["b1"]
    assert snapshot["beds"]["b2"] == engine.to_dict()["beds"]["b2"]  # taken at the end
    assert AlarmEngine.from_dict(snapshot).to_dict() == snapshot


def test_a_snapshot_of_another_version_is_refused() -> None:
    data = AlarmEngine().to_dict()
    data["version"] = 99
    with pytest.raises(ValueError, match="version"):
        AlarmEngine.from_dict(data)


def test_the_engine_is_deterministic() -> None:
    first, second = AlarmEngine(), AlarmEngine()
    assert [first.process(e) for e in scenario()] == [second.process(e) for e in scenario()]


# --------------------------------------------------------------------------------------------------
# Alarm burden


def test_alarm_burden_counts_episodes_per_bed_day() -> None:
    ward = Ward()
    ward.sample(0, SBP, 65)  # two alarms: high and medium
    high = ward.active("limit:systolic_bp_low_critical")
    assert high is not None
    ward.feed(Acknowledge(at(30), high.episode_id, "nurse.li"))
    ward.feed(PauseAudio(at(31), ward.engine.active_alarms()[1].episode_id, "nurse.li", timedelta(minutes=1)))
    ward.ticks(32, 400, every=8)  # a re-raise and escalations: the same alarms
    ward.sample(400, SPO2, 0)  # a low technical alarm
    burden = alarm_burden(ward.history, bed_days=0.5)
    assert burden.alarms == 3
    assert burden.alarms_per_bed_day == 6
    assert burden.per_bed_day_by_priority == {Priority.HIGH: 2, Priority.MEDIUM: 2, Priority.LOW: 2}
    assert burden.per_bed_day_by_category == {"physiological": 4, "score": 0, "technical": 2}
    assert burden.alarms_by_bed == {"b1": 3}
    assert burden.acknowledged_fraction == pytest.approx(1 / 3)
    assert burden.median_time_to_acknowledge == timedelta(seconds=30)


def test_alarm_burden_of_nothing_and_bad_denominators() -> None:
    burden = alarm_burden([], bed_days=1)
    assert burden.alarms == 0
    assert burden.acknowledged_fraction is None
    assert burden.median_time_to_acknowledge is None
    with pytest.raises(ValueError, match="bed_days"):
        alarm_burden([], bed_days=0)


def test_delay_and_hysteresis_cut_the_burden_of_a_noisy_replay() -> None:
    rng = random.Random(20250611)
    trace, level = [], 93.0
    for _ in range(3600):  # one hour of 1-Hz SpO2 drifting around the 90 % limit, with brief artefact dips
        level = min(99.0, max(84.0, level + rng.gauss(0, 0.6) + (93.0 - level) * 0.02))
        trace.append(level - (6 if rng.random() < 0.01 else 0))
    burdens = []
    for config in (AlarmConfig(), no_delay_no_hysteresis()):
        ward = Ward(config)
        ward.stream(SPO2, trace)
        burdens.append(alarm_burden(ward.history, bed_days=1 / 24))
    damped, raw = burdens
    assert raw.alarms > 0
    assert damped.alarms * 3 <= raw.alarms


# --------------------------------------------------------------------------------------------------
# Invariants over random event sequences

BEDS = ("b1", "b2")
ADULT_RULES = {rule.name: rule for rule in ADULT_LIMITS}
SAMPLED = {
    SPO2: [0, 70, 80, 84, 85, 86, 87, 88, 89, 90, 91, 92, 95, 98, 101, 8388607, -100],
    PULSE: [0, 35, 39, 40, 45, 49, 50, 55, 60, 80, 118, 121, 125, 150, 151, 160, 400],
    SBP: [0, 60, 69, 70, 85, 89, 90, 95, 120, 181, 185, 221, 350],
}
WATCHED = (PULSE, SPO2, RR)
NO_DATA_TIMEOUT = timedelta(seconds=60)

actions = st.one_of(
    st.tuples(
        st.just("sample"),
        st.sampled_from(BEDS),
        st.sampled_from([(p, v) for p, values in SAMPLED.items() for v in values]),
    ),
    st.tuples(
        st.just("sample"), st.sampled_from(BEDS), st.sampled_from([(SPO2, 88), (SPO2, 97), (PULSE, 70)])
    ),
    st.tuples(  # one report: several parameters at the same moment
        st.just("report"),
        st.sampled_from(BEDS),
        st.fixed_dictionaries(
            {}, optional={p: st.sampled_from(values) for p, values in SAMPLED.items()}
        ).filter(bool),
    ),
    st.builds(
        lambda bed, total, red: ("news2", bed, total, red and total >= 3),
        st.sampled_from(BEDS),
        st.integers(0, 20),
        st.booleans(),
    ),
    st.tuples(st.just("ack"), st.integers(0, 10)),
    st.tuples(st.just("pause"), st.integers(0, 10), st.integers(1, 180)),
    st.tuples(st.just("config"), st.sampled_from(BEDS), st.sampled_from([None, 86, 88, 90, 92, "off"])),
    st.just(("tick",)),
)
sequences = st.lists(st.tuples(st.sampled_from([0, 1, 2, 5, 10, 15, 16, 30, 61, 200]), actions), max_size=60)


class Reference:
    """When does each condition hold? Written from the specification, independently of the engine."""

    def __init__(self) -> None:
        self.readings: dict[tuple[str, Parameter], tuple[Validity, float | None]] = {}
        self.last_valid: dict[tuple[str, Parameter], datetime] = {}
        self.watch_start: dict[str, datetime] = {}
        self.news2: dict[str, tuple[int, bool]] = {}
        self.spo2_low: dict[str, float | None] = {}
        self.since: dict[tuple[str, str], datetime] = {}

    def keys(self, bed: str) -> list[str]:
        keys = [f"limit:{name}" for name in ADULT_RULES] + ["news2:medium", "news2:high"]
        keys += [f"{kind}:{p.value}" for kind in ("sensor_off", "implausible") for p in SAMPLED]
        return keys + [f"no_data:{p.value}" for p in WATCHED]

    def holds(self, bed: str, key: str, now: datetime) -> tuple[bool, datetime | None]:
        kind, _, name = key.partition(":")
        if kind == "limit":
            rule = ADULT_RULES[name]
            limit = self.spo2_low.get(bed, rule.limit) if name == "spo2_low" else rule.limit
            _, value = self.readings.get((bed, rule.parameter), (Validity.SENSOR_OFF, None))
            if limit is None or value is None:
                return False, None
            return (value < limit if rule.direction.value == "low" else value > limit), None
        if kind == "news2":
            if bed not in self.news2:
                return False, None
            band = news2_band(*self.news2[bed])
            wanted = {RiskBand.HIGH} if name == "high" else {RiskBand.MEDIUM, RiskBand.LOW_MEDIUM}
            return band in wanted, None
        parameter = Parameter(name)
        if kind == "no_data":
            last = max(self.watch_start[bed], self.last_valid.get((bed, parameter), self.watch_start[bed]))
            return now - last > NO_DATA_TIMEOUT, last + NO_DATA_TIMEOUT
        validity, _ = self.readings.get((bed, parameter), (Validity.VALID, None))
        return validity.value == kind, None

    def delay(self, key: str) -> timedelta:
        kind, _, name = key.partition(":")
        return DEFAULT_TIMINGS[ADULT_RULES[name].parameter].delay if kind == "limit" else timedelta(0)

    def update(self, now: datetime) -> None:
        for bed in self.watch_start:
            for key in self.keys(bed):
                holding, onset = self.holds(bed, key, now)
                if not holding:
                    self.since.pop((bed, key), None)
                else:
                    self.since.setdefault((bed, key), onset or now)

    def holding(self, now: datetime) -> set[tuple[str, str]]:
        return {
            (bed, key) for bed in self.watch_start for key in self.keys(bed) if self.holds(bed, key, now)[0]
        }

    def read(self, bed: str, parameter: Parameter, raw: float, at: datetime) -> None:
        validity = classify_measurement(parameter, raw)
        value = round_for_banding(parameter, raw) if validity is Validity.VALID else None
        self.readings[(bed, parameter)] = (validity, value)
        if validity is Validity.VALID:
            self.last_valid[(bed, parameter)] = at

    def apply(self, event: EngineInput, now: datetime) -> None:
        if isinstance(event, VitalSample | VitalSamples | News2Scored | ConfigureBed):
            self.watch_start.setdefault(event.bed, now)
        if isinstance(event, VitalSample):
            self.read(event.bed, event.parameter, event.value, event.at)
        elif isinstance(event, VitalSamples):
            for parameter, raw in event.samples:
                self.read(event.bed, parameter, raw, event.at)
        elif isinstance(event, News2Scored):
            self.news2[event.bed] = (event.total, event.red_score)
        elif isinstance(event, ConfigureBed):
            self.spo2_low[event.bed] = event.limit_overrides.get("spo2_low", 90)


def to_input(action: tuple[Any, ...], now: datetime, engine: AlarmEngine) -> EngineInput:
    kind = action[0]
    if kind == "sample":
        parameter, value = action[2]
        return VitalSample(now, action[1], parameter, value)
    if kind == "report":
        return VitalSamples(now, action[1], tuple(action[2].items()))
    if kind == "news2":
        return News2Scored(now, action[1], action[2], action[3])
    if kind == "config":
        limit = action[2]
        overrides = {} if limit is None else {"spo2_low": None if limit == "off" else limit}
        return ConfigureBed(now, action[1], limit_overrides=overrides, user="dr.zhang")
    active = engine.active_alarms()
    if kind in ("ack", "pause") and active:
        episode = active[action[1] % len(active)].episode_id
        if kind == "ack":
            return Acknowledge(now, episode, "nurse.li")
        return PauseAudio(now, episode, "nurse.li", timedelta(seconds=action[2]))
    return Tick(now)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences, st.integers(0, 60))
def test_alarm_invariants_hold_for_random_event_sequences(
    steps: list[tuple[int, tuple[Any, ...]]], snapshot_at: int
) -> None:
    engine, twin = AlarmEngine(), AlarmEngine()
    reference = Reference()
    history: list[AlarmEvent] = []
    now = T0
    for index, (seconds, action) in enumerate(steps):
        now += timedelta(seconds=seconds)
        if index == snapshot_at:  # the twin is persisted and resumed by "another worker"
            twin = AlarmEngine.from_dict(json.loads(json.dumps(twin.to_dict())))
        event = to_input(action, now, engine)
        calls: list[tuple[EngineInput, set[tuple[str, str]], dict[tuple[str, str], datetime]]] = []
        # Time first (judged on the state before the event), then the event (judged on the state after).
        reference.update(now)
        calls.append((Tick(now), reference.holding(now), dict(reference.since)))
        reference.apply(event, now)
        reference.update(now)
        calls.append((event, reference.holding(now), dict(reference.since)))
        for call, holding, holding_since in calls:
            out = engine.process(call)
            assert twin.process(call) == out, "a resumed snapshot must behave exactly like the original"
            history += out
            for alarm_event in out:
                if alarm_event.kind is EventKind.CLEARED:
                    # Never cleared while its condition holds.
                    assert (alarm_event.bed, alarm_event.condition) not in holding, alarm_event
            # Never lost: a condition held for its delay has a raised, uncleared alarm.
            active = {(a.bed, a.condition) for a in engine.active_alarms()}
            for (bed, key), since in holding_since.items():
                if now - since >= reference.delay(key):
                    assert (bed, key) in active, (bed, key, since, now)
    check_episode_histories(history, engine)


def check_episode_histories(history: list[AlarmEvent], engine: AlarmEngine) -> None:
    raised: set[str] = set()
    acknowledged: set[str] = set()
    cleared: set[str] = set()
    tiers: dict[str, int] = {}
    open_episode: dict[tuple[str, str], str] = {}
    tier_order = AlarmConfig().tiers
    for event in history:
        episode = event.episode_id
        assert episode not in cleared, f"event after the episode was cleared: {event}"
        if event.kind is EventKind.RAISED:
            assert episode not in raised, f"raised twice: {episode}"
            assert (event.bed, event.condition) not in open_episode, "two open episodes for one condition"
            raised.add(episode)
            open_episode[(event.bed, event.condition)] = episode
            tiers[episode] = 0
            continue
        assert episode in raised, f"event for an episode never raised: {event}"
        if event.kind is EventKind.ACKNOWLEDGED:
            acknowledged.add(episode)
        elif event.kind is EventKind.ESCALATED:
            assert episode not in acknowledged, "escalated after acknowledgement"
            assert tier_order.index(event.tier) == tiers[episode] + 1, "escalation skips or repeats a tier"
            tiers[episode] += 1
        elif event.kind is EventKind.CLEARED:
            if event.priority is Priority.HIGH:
                assert episode in acknowledged, f"latched high alarm cleared without acknowledgement: {event}"
            cleared.add(episode)
            del open_episode[(event.bed, event.condition)]
    assert {a.episode_id for a in engine.active_alarms()} == set(open_episode.values())


# --------------------------------------------------------------------------------------------------
# Scale: an input costs the same whatever the number of beds, with the outputs of a full sweep


class EveryBedEngine(AlarmEngine):
    """The reference: every input re-evaluates every condition of every monitored bed (the engine before
    it scheduled beds by due time), then every condition of the input's own bed."""

    def _advance(self, now: datetime) -> list[AlarmEvent]:
        out: list[AlarmEvent] = []
        for bed_id in sorted(self._beds):
            bed = self._beds[bed_id]
            if bed.monitoring:
                out += self._evaluate_bed(bed_id, bed, now)
        return out

    def _evaluate_bed(self, bed_id: str, bed: Any, now: datetime, only: Any = None) -> list[AlarmEvent]:
        return super()._evaluate_bed(bed_id, bed, now)


class Evaluations:
    """Counts what the engine evaluates: beds (by id) and conditions (by key)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.beds: list[str] = []
        self.conditions: list[str] = []
        evaluate_bed, zone = AlarmEngine._evaluate_bed, AlarmEngine._zone

        def counting_evaluate_bed(engine: AlarmEngine, bed_id: str, *args: Any) -> list[AlarmEvent]:
            self.beds.append(bed_id)
            return evaluate_bed(engine, bed_id, *args)

        def counting_zone(engine: AlarmEngine, bed: Any, condition: Any, now: datetime) -> Any:
            self.conditions.append(condition.key)
            return zone(engine, bed, condition, now)

        monkeypatch.setattr(AlarmEngine, "_evaluate_bed", counting_evaluate_bed)
        monkeypatch.setattr(AlarmEngine, "_zone", counting_zone)

    def reset(self) -> None:
        self.beds.clear()
        self.conditions.clear()


def test_an_input_evaluates_only_its_bed_and_a_tick_only_the_beds_that_are_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = AlarmEngine()
    beds = [f"bed{index:04d}" for index in range(5000)]
    for bed in beds:  # a central station: every bed monitored, with HR, SpO2 and RR watched for no data
        engine.process(ConfigureBed(T0, bed))
        for parameter, value in ((PULSE, 72), (SPO2, 97), (RR, 16)):
            engine.process(VitalSample(T0, bed, parameter, value))
    evaluations = Evaluations(monkeypatch)

    assert engine.process(VitalSample(at(1), "bed2500", SPO2, 96)) == []
    assert evaluations.beds == ["bed2500"]
    assert sorted(evaluations.conditions) == [  # and only the conditions a SpO2 value can change
        "implausible:spo2",
        "limit:spo2_low",
        "limit:spo2_low_critical",
        "no_data:spo2",
        "sensor_off:spo2",
    ]
    evaluations.reset()
    assert engine.process(Tick(at(2))) == []
    assert evaluations.beds == []  # nothing is due: no delay, hold, escalation or no-data timeout
    assert evaluations.conditions == []

    for bed in ("bed4000", "bed0100", "bed2500"):  # SpO2 dips: each due when its 15-s delay ends
        engine.process(VitalSample(at(3), bed, SPO2, 88))
    evaluations.reset()
    assert engine.process(Tick(at(17))) == []
    assert evaluations.beds == []
    out = engine.process(Tick(at(18)))
    assert [(e.kind, e.bed, e.condition) for e in out] == [  # in bed order, as a full sweep gives them
        (EventKind.RAISED, "bed0100", "limit:spo2_low"),
        (EventKind.RAISED, "bed2500", "limit:spo2_low"),
        (EventKind.RAISED, "bed4000", "limit:spo2_low"),
    ]
    assert evaluations.beds == ["bed0100", "bed2500", "bed4000"]

    evaluations.reset()
    assert engine.process(Tick(at(60))) == []  # HR and RR were last seen at 0 s: not yet "more than 60 s"
    assert evaluations.beds == []
    out = engine.process(Tick(at(60) + timedelta(microseconds=1)))
    assert len(evaluations.beds) == len(beds)  # now every bed is due: its devices went quiet
    assert {e.kind for e in out} == {EventKind.RAISED}
    assert Counter(e.condition for e in out) == {
        "no_data:pulse": len(beds),
        "no_data:respiratory_rate": len(beds),
        "no_data:spo2": len(beds) - 3,  # three beds sent SpO2 later
    }


def test_a_sample_for_a_due_bed_reevaluates_the_whole_bed_like_a_full_sweep() -> None:
    # With one tier, a raised alarm's escalation timer is dropped at its next evaluation. A sample that
    # comes when its bed is due raises the bed's due alarms first (no_data:pulse here), then re-evaluates
    # the bed; judging it on the sample's own conditions only would leave that timer behind.
    config = AlarmConfig(tiers=("nurse",))
    scheduled, reference = AlarmEngine(config), EveryBedEngine(config)
    events: list[EngineInput] = [
        ConfigureBed(T0, "b1", no_data_timeouts={PULSE: timedelta(seconds=10)}),
        VitalSample(at(11), "b1", SBP, 85),
        Tick(at(12)),
    ]
    for event in events:
        assert scheduled.process(event) == reference.process(event)
        assert scheduled.to_dict() == reference.to_dict()


def test_a_bool_is_still_refused_once_its_number_has_been_seen() -> None:
    VitalSample(T0, "b1", PULSE, 1)
    with pytest.raises(ValueError, match="must be a number"):
        VitalSample(T0, "b1", PULSE, True)


SCALE_BEDS = ("b1", "b2", "b3", "b10")
SCALE_VALUES = {
    SPO2: [0, 80, 84, 85, 88, 89, 90, 91, 92, 97, -100, 8388607],
    PULSE: [0, 39, 45, 50, 55, 65, 72, 121, 125, 151, 185, 400],
    SBP: [0, 65, 85, 89.4, 89.5, 95, 120, 185],
    RR: [0, 4, 7, 16, 31, 100],
    TEMP: [34.9, 35.2, 36.8, 38.8, 38.9, 39.2],
}
SCALE_CONFIGS = (
    AlarmConfig(),
    no_delay_no_hysteresis(),
    AlarmConfig(
        escalation_after={Priority.HIGH: timedelta(seconds=30), Priority.MEDIUM: None, Priority.LOW: None},
        tiers=("nurse", "doctor"),
        max_pause=timedelta(seconds=40),
    ),
    AlarmConfig(  # latching technical alarms after a delay, short no-data timeouts, one tier
        technical_priorities=dict.fromkeys(TechnicalCondition, Priority.HIGH),
        technical_delay=timedelta(seconds=5),
        no_data_timeouts={SPO2: timedelta(seconds=20), PULSE: timedelta(seconds=61)},
        news2_advisory=True,
        tiers=("nurse",),
    ),
)
scale_actions = st.one_of(
    st.tuples(
        st.just("sample"),
        st.sampled_from(SCALE_BEDS),
        st.sampled_from([(p, v) for p, values in SCALE_VALUES.items() for v in values]),
        st.sampled_from([0, 0, 0, 1, 30, 90]),  # seconds late
    ),
    st.tuples(
        st.just("report"),
        st.sampled_from(SCALE_BEDS),
        st.fixed_dictionaries({}, optional={p: st.sampled_from(v) for p, v in SCALE_VALUES.items()}).filter(
            bool
        ),
        st.sampled_from([0, 0, 0, 1, 30, 90]),  # seconds late
    ),
    st.tuples(st.just("news2"), st.sampled_from(SCALE_BEDS), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("ack"), st.integers(0, 10)),
    st.tuples(st.just("pause"), st.integers(0, 10), st.integers(1, 40)),
    st.tuples(
        st.just("config"),
        st.sampled_from(SCALE_BEDS),
        st.sampled_from(list(Population)),
        st.sampled_from(
            [{}, {"spo2_low": 86}, {"spo2_low": None}, {"pulse_high": 100, "systolic_bp_low": None}]
        ),
        st.sampled_from([None, {}, {SPO2: timedelta(seconds=30)}, {PULSE: timedelta(seconds=10)}]),
    ),
    st.tuples(st.just("end"), st.sampled_from(SCALE_BEDS)),
    st.just(("tick",)),
)
scale_steps = st.sampled_from(
    [timedelta(0), timedelta(microseconds=1), timedelta(milliseconds=500)]
    + [timedelta(seconds=s) for s in (1, 2, 5, 10, 14, 15, 20, 30, 59, 60, 61, 200)]
)


def scale_input(action: tuple[Any, ...], now: datetime, engine: AlarmEngine) -> EngineInput:
    kind = action[0]
    if kind == "sample":
        parameter, value = action[2]
        return VitalSample(now - timedelta(seconds=action[3]), action[1], parameter, value)
    if kind == "report":
        return VitalSamples(now - timedelta(seconds=action[3]), action[1], tuple(action[2].items()))
    if kind == "news2":
        return News2Scored(now, action[1], action[2], action[3] and action[2] >= 3)
    if kind == "config":
        return ConfigureBed(now, action[1], action[2], action[3], action[4], user="dr.zhang")
    if kind == "end":
        return EndMonitoring(now, action[1], "nurse.li")
    return to_input(action, now, engine)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SCALE_CONFIGS))),
    st.lists(st.tuples(scale_steps, scale_actions), max_size=80),
    st.integers(0, 80),
)
def test_scheduling_beds_by_due_time_gives_exactly_the_outputs_of_a_full_sweep(
    config_index: int, steps: list[tuple[timedelta, tuple[Any, ...]]], snapshot_at: int
) -> None:
    config = SCALE_CONFIGS[config_index]
    scheduled, reference = AlarmEngine(config), EveryBedEngine(config)
    now = T0
    for index, (step, action) in enumerate(steps):
        now += step
        if index == snapshot_at:  # a resumed engine rebuilds its schedule from the state
            scheduled = AlarmEngine.from_dict(json.loads(json.dumps(scheduled.to_dict())), config)
        event = scale_input(action, now, reference)
        try:
            expected = reference.process(event)
        except ValueError:  # a pause longer than allowed: refused by both, before any change
            with pytest.raises(ValueError, match="at most"):
                scheduled.process(event)
            continue
        assert scheduled.process(event) == expected, (index, event)
    assert scheduled.active_alarms() == reference.active_alarms()
    assert scheduled.to_dict() == reference.to_dict()
