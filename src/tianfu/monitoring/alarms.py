"""The alarm engine: one explicit state machine per (bed, alarm condition), fed events, returning events.

Why this shape: alarms are safety-critical and alarm fatigue is measured in hundreds of alarms per bed
per day (docs/monitoring.md §2.3). The engine is pure and deterministic — time arrives with every
input, nothing reads a clock — so every rule below is unit-tested and property-tested, recorded data can
be replayed to measure alarm burden with and without delays/hysteresis, and the whole state can be
snapshotted (:meth:`AlarmEngine.to_dict`) so another worker resumes it.

Conditions (IEC 60601-1-8 concepts; defaults in :data:`ADULT_LIMITS`, :data:`PAEDIATRIC_LIMITS`,
:data:`DEFAULT_TIMINGS` and :class:`AlarmConfig`, all *to be reviewed by the hospital*):

- ``limit:<rule>``: a physiological limit per parameter (``spo2_low``, ``pulse_high_critical`` …),
  per-patient overridable. Strict comparison: SpO2 89 violates a low limit of 90, 90 does not.
- ``news2:medium`` (band low-medium or medium: 5-6 or a single 3), ``news2:high`` (≥7), and the
  optional ``news2:low`` advisory (1-4, off by default). The bands are exclusive, so a rise from 6 to
  8 ends the medium alarm and raises the high one.
- ``no_data:<parameter>`` (no valid value for longer than the timeout; covers a device going offline
  and a probe that stays off), ``sensor_off:<parameter>``, ``implausible:<parameter>`` (technical).

Life cycle of a condition: it starts to hold -> after its DELAY it is RAISED (one episode, one id) and
notified to the first tier -> unacknowledged, it ESCALATES tier by tier on a timer -> a user may PAUSE
its audio for a limited time (it stays visible; RERAISED when the pause ends and it is still
unacknowledged) or ACKNOWLEDGE it (escalation stops) -> it is resolved once the value has been back
inside the limit by the HYSTERESIS margin for the hold time -> it is CLEARED when resolved, except that a
LATCHING (high-priority) alarm stays, reported as LATCHED, until it is also acknowledged. Between the
limit and the margin ("dead band") nothing changes, which stops chattering. An invalid or missing
reading freezes a raised alarm (it is neither confirmed nor cleared: the technical alarm says why) and
cancels a pending one.

Every returned :class:`AlarmEvent` carries who and when; the stream of events *is* the alarm history
(the caller persists it). Events may arrive late: the engine's clock never goes backwards, a late input
is applied at the current clock time, and output events are stamped with the time the engine
determined them. Feed a :class:`Tick` at least once a second to time delays and escalations.

Scale: one engine serves a central station (thousands of beds, several samples per bed per second).
An input costs the same whatever the number of beds: it evaluates only the conditions of its own bed
that it can change, and a Tick only the beds with something due (see :class:`AlarmEngine`).
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any

from tianfu.monitoring.scores import RiskBand, news2_band
from tianfu.monitoring.vitals import (
    NUMERIC_PARAMETERS,
    Parameter,
    Validity,
    classify_measurement,
    round_for_banding,
)

SNAPSHOT_VERSION = 1


class Priority(StrEnum):
    """IEC 60601-1-8 alarm priority: HIGH = immediate response, MEDIUM = prompt, LOW = awareness."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 1, "medium": 2, "high": 3}[self.value]


class Population(StrEnum):
    """Which default limit table a bed uses."""

    ADULT = "adult"
    PAEDIATRIC = "paediatric"


class Direction(StrEnum):
    LOW = "low"  # alarm when value < limit
    HIGH = "high"  # alarm when value > limit


class EventKind(StrEnum):
    """What happened to an alarm episode."""

    RAISED = "raised"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    PAUSED = "paused"
    RERAISED = "reraised"  # the audio pause ended and the alarm is still unacknowledged
    LATCHED = "latched"  # the condition ended; the latching alarm stays until acknowledged
    CLEARED = "cleared"


@dataclass(frozen=True)
class LimitRule:
    """A physiological limit: ``parameter`` below (LOW) or above (HIGH) ``limit`` is an alarm condition."""

    name: str
    parameter: Parameter
    direction: Direction
    limit: float
    priority: Priority

    def violated_by(self, value: float) -> bool:
        return value < self.limit if self.direction is Direction.LOW else value > self.limit


@dataclass(frozen=True)
class ConditionTiming:
    """Alarm-condition delay, and hysteresis: clear only when ``clear_margin`` inside for ``clear_hold``."""

    delay: timedelta = timedelta(0)
    clear_margin: float = 0.0
    clear_hold: timedelta = timedelta(0)


_P = Parameter
_L, _H = Direction.LOW, Direction.HIGH
_HI, _MED = Priority.HIGH, Priority.MEDIUM

#: Adult default limits (to be reviewed by the hospital). HIGH for life-threatening extremes (SpO2 <85,
#: HR <40 or >150 …), MEDIUM for ordinary violations. Patients on NEWS2 Scale 2 (target 88-92 %) need a
#: per-patient ``spo2_low`` (e.g. 86); lowering 90 -> 88 cut SpO2 alarms by 63 % in one unit (§2.4).
ADULT_LIMITS: tuple[LimitRule, ...] = (
    LimitRule("pulse_low_critical", _P.PULSE, _L, 40, _HI),
    LimitRule("pulse_low", _P.PULSE, _L, 50, _MED),
    LimitRule("pulse_high", _P.PULSE, _H, 120, _MED),
    LimitRule("pulse_high_critical", _P.PULSE, _H, 150, _HI),
    LimitRule("spo2_low_critical", _P.SPO2, _L, 85, _HI),
    LimitRule("spo2_low", _P.SPO2, _L, 90, _MED),
    LimitRule("respiratory_rate_low_critical", _P.RESPIRATORY_RATE, _L, 5, _HI),
    LimitRule("respiratory_rate_low", _P.RESPIRATORY_RATE, _L, 8, _MED),
    LimitRule("respiratory_rate_high", _P.RESPIRATORY_RATE, _H, 30, _MED),
    LimitRule("respiratory_rate_high_critical", _P.RESPIRATORY_RATE, _H, 40, _HI),
    LimitRule("systolic_bp_low_critical", _P.SYSTOLIC_BP, _L, 70, _HI),
    LimitRule("systolic_bp_low", _P.SYSTOLIC_BP, _L, 90, _MED),
    LimitRule("systolic_bp_high", _P.SYSTOLIC_BP, _H, 180, _MED),
    LimitRule("systolic_bp_high_critical", _P.SYSTOLIC_BP, _H, 220, _HI),
    LimitRule("mean_bp_low_critical", _P.MEAN_BP, _L, 50, _HI),
    LimitRule("mean_bp_low", _P.MEAN_BP, _L, 60, _MED),
    LimitRule("temperature_low", _P.TEMPERATURE, _L, 35.0, _MED),
    LimitRule("temperature_high", _P.TEMPERATURE, _H, 39.0, _MED),
)

#: Paediatric default limits for a child of about 1-12 years (to be reviewed by the hospital; neonates
#: and infants need their own tables, and normal ranges vary with age: configure per patient).
PAEDIATRIC_LIMITS: tuple[LimitRule, ...] = (
    LimitRule("pulse_low_critical", _P.PULSE, _L, 60, _HI),
    LimitRule("pulse_low", _P.PULSE, _L, 70, _MED),
    LimitRule("pulse_high", _P.PULSE, _H, 160, _MED),
    LimitRule("pulse_high_critical", _P.PULSE, _H, 180, _HI),
    LimitRule("spo2_low_critical", _P.SPO2, _L, 85, _HI),
    LimitRule("spo2_low", _P.SPO2, _L, 92, _MED),
    LimitRule("respiratory_rate_low_critical", _P.RESPIRATORY_RATE, _L, 8, _HI),
    LimitRule("respiratory_rate_low", _P.RESPIRATORY_RATE, _L, 12, _MED),
    LimitRule("respiratory_rate_high", _P.RESPIRATORY_RATE, _H, 40, _MED),
    LimitRule("respiratory_rate_high_critical", _P.RESPIRATORY_RATE, _H, 60, _HI),
    LimitRule("systolic_bp_low_critical", _P.SYSTOLIC_BP, _L, 65, _HI),
    LimitRule("systolic_bp_low", _P.SYSTOLIC_BP, _L, 80, _MED),
    LimitRule("systolic_bp_high", _P.SYSTOLIC_BP, _H, 130, _MED),
    LimitRule("systolic_bp_high_critical", _P.SYSTOLIC_BP, _H, 150, _HI),
    LimitRule("mean_bp_low_critical", _P.MEAN_BP, _L, 45, _HI),
    LimitRule("mean_bp_low", _P.MEAN_BP, _L, 55, _MED),
    LimitRule("temperature_low", _P.TEMPERATURE, _L, 35.5, _MED),
    LimitRule("temperature_high", _P.TEMPERATURE, _H, 39.0, _MED),
)

_SECONDS = timedelta(seconds=1)

#: Per-parameter delay and hysteresis. Continuous parameters get a delay (a 15-s SpO2 delay removed 60 %
#: of nuisance alarms, §2.4; HR 10 s keeps within the ≤10 s time to alarm for low HR) and a 10-s hold;
#: intermittent ones (NIBP, temperature) none, because each reading stands for minutes.
DEFAULT_TIMINGS: Mapping[Parameter, ConditionTiming] = MappingProxyType(
    {
        _P.SPO2: ConditionTiming(15 * _SECONDS, 2.0, 10 * _SECONDS),
        _P.PULSE: ConditionTiming(10 * _SECONDS, 5.0, 10 * _SECONDS),
        _P.RESPIRATORY_RATE: ConditionTiming(10 * _SECONDS, 2.0, 10 * _SECONDS),
        _P.SYSTOLIC_BP: ConditionTiming(timedelta(0), 5.0, timedelta(0)),
        _P.DIASTOLIC_BP: ConditionTiming(timedelta(0), 5.0, timedelta(0)),
        _P.MEAN_BP: ConditionTiming(timedelta(0), 5.0, timedelta(0)),
        _P.TEMPERATURE: ConditionTiming(timedelta(0), 0.2, timedelta(0)),
    }
)


class TechnicalCondition(StrEnum):
    NO_DATA = "no_data"
    SENSOR_OFF = "sensor_off"
    IMPLAUSIBLE = "implausible"


def _default_limit_tables() -> dict[Population, tuple[LimitRule, ...]]:
    return {Population.ADULT: ADULT_LIMITS, Population.PAEDIATRIC: PAEDIATRIC_LIMITS}


def _default_escalation() -> dict[Priority, timedelta | None]:
    return {Priority.HIGH: timedelta(seconds=60), Priority.MEDIUM: timedelta(minutes=5), Priority.LOW: None}


def _default_news2_escalation() -> dict[Priority, timedelta | None]:
    # Urgent assessment within 60 min for NEWS2 ≥5, emergency assessment within 30 min for ≥7 (§1.1).
    return {Priority.HIGH: timedelta(minutes=30), Priority.MEDIUM: timedelta(minutes=60), Priority.LOW: None}


def _default_no_data_timeouts() -> dict[Parameter, timedelta]:
    return {p: timedelta(seconds=60) for p in (_P.PULSE, _P.SPO2, _P.RESPIRATORY_RATE)}


def _default_technical_priorities() -> dict[TechnicalCondition, Priority]:
    return {
        TechnicalCondition.NO_DATA: Priority.MEDIUM,  # the patient is unmonitored
        TechnicalCondition.SENSOR_OFF: Priority.LOW,  # awareness; becomes no_data if it lasts
        TechnicalCondition.IMPLAUSIBLE: Priority.LOW,
    }


@dataclass(frozen=True)
class AlarmConfig:
    """Deployment configuration (code, not state: every worker of a deployment must use the same).

    - ``escalation_after``: unacknowledged-alarm escalation interval per priority (``None`` = never),
      repeated tier by tier up ``tiers``; ``news2_escalation_after`` is used for NEWS2 alarms.
    - ``no_data_timeouts``: parameters watched for "no valid data" on every bed, unless the bed's
      configuration replaces them; intermittent parameters (NIBP: cycle time plus margin) are added
      per bed.
    - ``technical_delay``: technical alarms have no delay by default (the no-data timeout is their delay).
    - ``latching``: priorities whose alarms latch until acknowledged.
    - ``max_pause``: the longest audio pause a user may ask for (IEC: time-limited, typically 1-3 min).
    """

    limit_tables: Mapping[Population, tuple[LimitRule, ...]] = field(default_factory=_default_limit_tables)
    timings: Mapping[Parameter, ConditionTiming] = field(default_factory=lambda: dict(DEFAULT_TIMINGS))
    escalation_after: Mapping[Priority, timedelta | None] = field(default_factory=_default_escalation)
    news2_escalation_after: Mapping[Priority, timedelta | None] = field(
        default_factory=_default_news2_escalation
    )
    tiers: tuple[str, ...] = ("bedside_nurse", "charge_nurse", "physician", "rapid_response_team")
    no_data_timeouts: Mapping[Parameter, timedelta] = field(default_factory=_default_no_data_timeouts)
    technical_priorities: Mapping[TechnicalCondition, Priority] = field(
        default_factory=_default_technical_priorities
    )
    technical_delay: timedelta = timedelta(0)
    news2_advisory: bool = False
    latching: frozenset[Priority] = frozenset({Priority.HIGH})
    max_pause: timedelta = timedelta(minutes=3)

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("at least one escalation tier is needed")
        for population in Population:
            names = [rule.name for rule in self.limit_tables.get(population, ())]
            if len(names) != len(set(names)):
                raise ValueError(f"duplicate limit rule names in the {population.value} table")
        for interval in (*self.escalation_after.values(), *self.news2_escalation_after.values()):
            if interval is not None and interval <= timedelta(0):
                raise ValueError("escalation intervals must be positive")
        if self.max_pause <= timedelta(0):
            raise ValueError("max_pause must be positive")


# ---------------------------------------------------------------------------------------------------
# Inputs


def _aware(moment: datetime) -> datetime:
    if type(moment.tzinfo) is timezone:  # a fixed offset (UTC included): aware at every moment
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got {moment!r}")
    return moment


_CLASSIFIED: dict[tuple[Parameter, float], tuple[Validity, float | None]] = {}
_CLASSIFIED_MAX = 1 << 13  # a few thousand distinct values in practice; cleared when full


def _classify(parameter: Parameter, value: float) -> tuple[Validity, float | None]:
    """A device value's validity and, when valid, its value rounded for banding; memoised, because
    monitors send the same few hundred values over and over and decimal rounding is slow."""
    key = (parameter, value)
    found = _CLASSIFIED.get(key)
    if found is None:
        validity = classify_measurement(parameter, value)
        found = validity, round_for_banding(parameter, value) if validity is Validity.VALID else None
        if len(_CLASSIFIED) >= _CLASSIFIED_MAX:
            _CLASSIFIED.clear()
        _CLASSIFIED[key] = found
    return found


@dataclass(frozen=True)
class VitalSample:
    """A device measurement (any value, sentinels included: the engine classifies it)."""

    at: datetime
    bed: str
    parameter: Parameter
    value: float

    def __post_init__(self) -> None:
        _aware(self.at)
        object.__setattr__(self, "parameter", _streamed(self.parameter, self.value))


def _streamed(parameter: Parameter, value: float) -> Parameter:
    """The parameter of a device value, checked: numeric, and the value a number."""
    if parameter.__class__ is not Parameter:  # a member already needs no conversion
        parameter = Parameter(parameter)
    if parameter not in NUMERIC_PARAMETERS:
        raise ValueError(f"{parameter.value} is charted, not a device stream")
    value_type = type(value)
    if value_type is not float and value_type is not int:  # exactly: a bool is refused here
        classify_measurement(parameter, value)  # type check only
    return parameter


@dataclass(frozen=True)
class VitalSamples:
    """Several parameters measured at one moment (one device report). Their readings are applied
    together, then the bed is evaluated once: the conditions they can change, in key order (the whole bed
    if it is due). Cheaper than one :class:`VitalSample` each, which evaluates after every reading."""

    at: datetime
    bed: str
    samples: tuple[tuple[Parameter, float], ...]

    def __post_init__(self) -> None:
        _aware(self.at)
        checked = tuple((_streamed(parameter, value), value) for parameter, value in self.samples)
        if not checked or len({parameter for parameter, _ in checked}) != len(checked):
            raise ValueError("simultaneous samples need at least one value, and one per parameter")
        object.__setattr__(self, "samples", checked)


@dataclass(frozen=True)
class News2Scored:
    """A new NEWS2 aggregate for a bed (e.g. ``News2Scored(at, bed, result.total, result.red_score)``)."""

    at: datetime
    bed: str
    total: int
    red_score: bool

    def __post_init__(self) -> None:
        _aware(self.at)
        if isinstance(self.total, bool) or not isinstance(self.total, int) or not 0 <= self.total <= 20:
            raise ValueError(f"NEWS2 total must be an integer 0-20, got {self.total!r}")


@dataclass(frozen=True)
class Tick:
    """Time passes: delays, hysteresis holds, escalations, pause ends and no-data timeouts are checked."""

    at: datetime

    def __post_init__(self) -> None:
        _aware(self.at)


@dataclass(frozen=True)
class Acknowledge:
    """A user acknowledges one alarm episode (the one they saw, by id)."""

    at: datetime
    episode_id: str
    user: str

    def __post_init__(self) -> None:
        _aware(self.at)
        if not self.user:
            raise ValueError("an acknowledgement needs a user")


@dataclass(frozen=True)
class PauseAudio:
    """A user pauses one alarm's audio for ``duration`` (≤ the configured maximum)."""

    at: datetime
    episode_id: str
    user: str
    duration: timedelta

    def __post_init__(self) -> None:
        _aware(self.at)
        if not self.user:
            raise ValueError("a pause needs a user")
        if self.duration <= timedelta(0):
            raise ValueError("a pause must last a positive time")


@dataclass(frozen=True)
class ConfigureBed:
    """Start or change monitoring of a bed: population, per-patient limits and watched parameters.

    ``limit_overrides`` maps rule names of the population's table to a new limit, or ``None`` to turn
    that rule off for this patient. ``no_data_timeouts`` replaces the configured watched parameters
    (``None`` keeps the deployment default).
    """

    at: datetime
    bed: str
    population: Population = Population.ADULT
    limit_overrides: Mapping[str, float | None] = field(default_factory=dict)
    no_data_timeouts: Mapping[Parameter, timedelta] | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        _aware(self.at)
        object.__setattr__(self, "population", Population(self.population))


@dataclass(frozen=True)
class EndMonitoring:
    """Monitoring of a bed ends (discharge, transfer): its alarms are cleared as a deliberate operator
    action, recorded with the user; later samples for the bed are ignored until it is configured again."""

    at: datetime
    bed: str
    user: str

    def __post_init__(self) -> None:
        _aware(self.at)
        if not self.user:
            raise ValueError("ending monitoring needs a user")


EngineInput = (
    VitalSample | VitalSamples | News2Scored | Tick | Acknowledge | PauseAudio | ConfigureBed | EndMonitoring
)


# ---------------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class AlarmEvent:
    """One entry of the alarm history. ``tier`` is the role notified at that moment; ``value`` the value
    behind the condition (the rounded reading, the NEWS2 total), when there is one."""

    kind: EventKind
    at: datetime
    bed: str
    condition: str
    episode_id: str
    priority: Priority
    tier: str
    user: str | None = None
    value: float | None = None
    until: datetime | None = None
    detail: str | None = None

    @property
    def category(self) -> str:
        """``physiological``, ``score`` or ``technical``."""
        return condition_category(self.condition)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "at": self.at.isoformat(),
            "bed": self.bed,
            "condition": self.condition,
            "episode_id": self.episode_id,
            "priority": self.priority.value,
            "tier": self.tier,
            "user": self.user,
            "value": self.value,
            "until": None if self.until is None else self.until.isoformat(),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmEvent:
        return cls(
            kind=EventKind(data["kind"]),
            at=datetime.fromisoformat(data["at"]),
            bed=data["bed"],
            condition=data["condition"],
            episode_id=data["episode_id"],
            priority=Priority(data["priority"]),
            tier=data["tier"],
            user=data.get("user"),
            value=data.get("value"),
            until=None if data.get("until") is None else datetime.fromisoformat(data["until"]),
            detail=data.get("detail"),
        )


@dataclass(frozen=True)
class ActiveAlarm:
    """An alarm currently shown at the central station."""

    episode_id: str
    bed: str
    condition: str
    priority: Priority
    raised_at: datetime
    tier: str
    condition_holds: bool
    latched: bool  # the condition has ended; waiting for an acknowledgement
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    paused_until: datetime | None


def condition_category(condition: str) -> str:
    """``physiological`` for ``limit:*``, ``score`` for ``news2:*``, ``technical`` otherwise."""
    kind = condition.partition(":")[0]
    return {"limit": "physiological", "news2": "score"}.get(kind, "technical")


# ---------------------------------------------------------------------------------------------------
# State


class _Zone(Enum):
    HOLDS = "holds"  # the condition holds
    DEAD_BAND = "dead_band"  # does not hold, but not back inside by the hysteresis margin
    CLEAR = "clear"  # back inside by the margin
    UNKNOWN = "unknown"  # no valid reading


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _micros(interval: timedelta) -> int:
    return interval // timedelta(microseconds=1)


@dataclass
class _Episode:
    episode_id: str
    priority: Priority
    latching: bool
    raised_at: datetime
    value: float | None
    holds: bool = True
    resolved: bool = False
    resolved_since: datetime | None = None
    tier: int = 0
    next_escalation_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    paused_until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "priority": self.priority.value,
            "latching": self.latching,
            "raised_at": self.raised_at.isoformat(),
            "value": self.value,
            "holds": self.holds,
            "resolved": self.resolved,
            "resolved_since": _iso(self.resolved_since),
            "tier": self.tier,
            "next_escalation_at": _iso(self.next_escalation_at),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(self.acknowledged_at),
            "paused_until": _iso(self.paused_until),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Episode:
        return cls(
            episode_id=data["episode_id"],
            priority=Priority(data["priority"]),
            latching=data["latching"],
            raised_at=datetime.fromisoformat(data["raised_at"]),
            value=data["value"],
            holds=data["holds"],
            resolved=data["resolved"],
            resolved_since=_from_iso(data["resolved_since"]),
            tier=data["tier"],
            next_escalation_at=_from_iso(data["next_escalation_at"]),
            acknowledged_by=data["acknowledged_by"],
            acknowledged_at=_from_iso(data["acknowledged_at"]),
            paused_until=_from_iso(data["paused_until"]),
        )


@dataclass
class _ConditionState:
    pending_since: datetime | None = None
    episode: _Episode | None = None


@dataclass(slots=True)
class _Reading:
    at: datetime
    value: float | None  # rounded; None unless valid
    validity: Validity


@dataclass(frozen=True, slots=True)
class _LimitCheck:
    rule: LimitRule  # the effective rule (per-patient limit applied)
    clear_bound: float  # back inside by the hysteresis margin: value >= (LOW) or <= (HIGH) this
    low: bool  # rule.direction is Direction.LOW (the hot path compares floats only)
    parameter: Parameter  # rule.parameter, and rule.limit, one attribute away
    limit: float


@dataclass(frozen=True, slots=True)
class _Condition:
    """A condition key, parsed once per bed configuration."""

    key: str
    kind: str  # "limit", "news2" or a TechnicalCondition value
    name: str
    check: _LimitCheck | None = None  # limit: the bed's effective rule; None when switched off
    parameter: Parameter | None = None  # technical conditions


@dataclass(frozen=True)
class _BedPlan:
    """What a bed's configuration implies (derived, not part of the snapshot)."""

    checks: Mapping[str, _LimitCheck]  # effective limit rules by name; disabled ones left out
    conditions: dict[str, _Condition]  # parsed condition keys, filled as they are met
    sample_conditions: dict[Parameter, tuple[_Condition, ...]]  # what a sample can change, in order
    #: Watched parameters with their no-data timeout plus one resolution step: no valid value since
    #: ``t`` makes the no-data condition hold from ``t + that`` on.
    no_data_starts: tuple[tuple[Parameter, timedelta], ...] = ()
    combined: dict[tuple[Parameter, ...], tuple[_Condition, ...]] = field(default_factory=dict)

    def conditions_of(self, parameters: tuple[Parameter, ...]) -> tuple[_Condition, ...]:
        """What samples of these parameters can change, in key order (remembered per combination)."""
        found = self.combined.get(parameters)
        if found is None:
            merged = {c.key: c for parameter in parameters for c in self.sample_conditions[parameter]}
            found = self.combined[parameters] = tuple(merged[key] for key in sorted(merged))
        return found

    def condition(self, key: str) -> _Condition:
        parsed = self.conditions.get(key)
        if parsed is None:
            kind, _, name = key.partition(":")
            if kind == "limit":
                parsed = _Condition(key, kind, name, check=self.checks.get(name))
            elif kind == "news2":
                parsed = _Condition(key, kind, name)
            else:
                parsed = _Condition(key, kind, name, parameter=Parameter(name))
            self.conditions[key] = parsed
        return parsed


@dataclass
class _BedState:
    population: Population
    limit_overrides: dict[str, float | None]
    no_data_timeouts: dict[Parameter, timedelta]
    watch_started_at: datetime
    monitoring: bool = True
    sequence: int = 0
    readings: dict[Parameter, _Reading] = field(default_factory=dict)
    last_valid_at: dict[Parameter, datetime] = field(default_factory=dict)
    news2: tuple[int, bool] | None = None
    conditions: dict[str, _ConditionState] = field(default_factory=dict)
    plan: _BedPlan | None = field(default=None, repr=False, compare=False)  # derived; see AlarmEngine._plan

    def to_dict(self) -> dict[str, Any]:
        return {
            "population": self.population.value,
            "limit_overrides": dict(self.limit_overrides),
            "no_data_timeouts": {p.value: _micros(t) for p, t in self.no_data_timeouts.items()},
            "watch_started_at": self.watch_started_at.isoformat(),
            "monitoring": self.monitoring,
            "sequence": self.sequence,
            "readings": {
                p.value: {"at": r.at.isoformat(), "value": r.value, "validity": r.validity.value}
                for p, r in self.readings.items()
            },
            "last_valid_at": {p.value: t.isoformat() for p, t in self.last_valid_at.items()},
            "news2": None if self.news2 is None else list(self.news2),
            "conditions": {
                key: {
                    "pending_since": _iso(state.pending_since),
                    "episode": None if state.episode is None else state.episode.to_dict(),
                }
                for key, state in self.conditions.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _BedState:
        news2 = data["news2"]
        return cls(
            population=Population(data["population"]),
            limit_overrides=dict(data["limit_overrides"]),
            no_data_timeouts={
                Parameter(p): timedelta(microseconds=t) for p, t in data["no_data_timeouts"].items()
            },
            watch_started_at=datetime.fromisoformat(data["watch_started_at"]),
            monitoring=data["monitoring"],
            sequence=data["sequence"],
            readings={
                Parameter(p): _Reading(datetime.fromisoformat(r["at"]), r["value"], Validity(r["validity"]))
                for p, r in data["readings"].items()
            },
            last_valid_at={Parameter(p): datetime.fromisoformat(t) for p, t in data["last_valid_at"].items()},
            news2=None if news2 is None else (int(news2[0]), bool(news2[1])),
            conditions={
                key: _ConditionState(
                    pending_since=_from_iso(state["pending_since"]),
                    episode=None if state["episode"] is None else _Episode.from_dict(state["episode"]),
                )
                for key, state in data["conditions"].items()
            },
        )


_NEWS2_CONDITION_BANDS: Mapping[str, frozenset[RiskBand]] = MappingProxyType(
    {
        "news2:high": frozenset({RiskBand.HIGH}),
        "news2:medium": frozenset({RiskBand.MEDIUM, RiskBand.LOW_MEDIUM}),
        "news2:low": frozenset({RiskBand.LOW}),
    }
)

#: The conditions a NEWS2 score can change, in evaluation order.
_NEWS2_CONDITIONS = tuple(
    _Condition(key, "news2", key.partition(":")[2]) for key in sorted(_NEWS2_CONDITION_BANDS)
)

#: Zones without an onset or a value, shared (tuples are immutable).
_CLEAR: tuple[_Zone, datetime | None, float | None] = (_Zone.CLEAR, None, None)
_UNKNOWN: tuple[_Zone, datetime | None, float | None] = (_Zone.UNKNOWN, None, None)
_HOLDS: tuple[_Zone, datetime | None, float | None] = (_Zone.HOLDS, None, None)

#: Datetimes are exact to the microsecond: the first moment after ``t`` is ``t + _RESOLUTION``.
_RESOLUTION = timedelta(microseconds=1)


def _read(bed: _BedState, parameter: Parameter, raw: float, at: datetime) -> bool:
    """Record a device value as the bed's reading; False when a newer reading was already applied."""
    previous = bed.readings.get(parameter)
    if previous is not None and at < previous.at:
        return False
    found = _CLASSIFIED.get((parameter, raw))
    validity, value = _classify(parameter, raw) if found is None else found
    if previous is None:
        bed.readings[parameter] = _Reading(at, value, validity)
    else:  # readings are the bed's own: updated in place
        previous.at, previous.value, previous.validity = at, value, validity
    if validity is Validity.VALID:
        bed.last_valid_at[parameter] = at
    return True


# ---------------------------------------------------------------------------------------------------
# Engine


class AlarmEngine:
    """Feeds inputs through per-(bed, condition) state machines; see the module docstring for the rules.

    ``process(event)`` returns the resulting :class:`AlarmEvent` list (possibly empty);
    ``active_alarms()`` lists what the central station shows; ``to_dict``/``from_dict`` persist it.
    A sample or score for a bed never configured starts monitoring it with the adult defaults, so that
    no alarm is lost to a missing configuration; configure beds first to get the right limits.

    Cost (a central station serves thousands of beds): an input evaluates only its own bed (a sample
    or score only the conditions it can change), plus the beds that are due. Each monitored bed has a
    *due time*, the earliest moment at which time alone can change one of its conditions (a delay, a
    hysteresis hold, an escalation, the end of an audio pause, a no-data timeout); before it,
    evaluating the bed would change nothing. Beds wait in a heap by due time, so a :class:`Tick`
    costs a heap check plus the evaluation of the beds that are due (and re-queuing, at most once per
    no-data timeout, a bed whose due time moved later). The outputs are exactly those of re-evaluating
    every bed at every input, which the tests check.
    """

    def __init__(self, config: AlarmConfig | None = None) -> None:
        self.config = config or AlarmConfig()
        self._clock: datetime | None = None
        self._beds: dict[str, _BedState] = {}
        # Derived from the configuration and the beds, rebuilt by from_dict (not part of the snapshot):
        self._tables = {
            population: {rule.name: rule for rule in rules}
            for population, rules in self.config.limit_tables.items()
        }
        self._episodes: dict[str, tuple[str, str]] = {}  # open episode id -> (bed, condition)
        self._due: dict[str, datetime] = {}  # monitored bed -> its due time
        # Heap of (time, bed), lazily cleaned: an entry is current only while _queued[bed] is its time,
        # which is never later than the bed's due time (a due time that moves later keeps its entry).
        self._queue: list[tuple[datetime, str]] = []
        self._queued: dict[str, datetime] = {}

    # -- public API ---------------------------------------------------------------------------------

    def process(self, event: EngineInput) -> list[AlarmEvent]:
        """Apply one input at ``max(engine clock, event.at)`` and return what it caused, in order.

        Time is first advanced to that moment (so a sample's own effect is judged after everything
        that was already due, bed by bed in bed order), then the input is applied and its bed
        re-evaluated.
        """
        now = event.at if self._clock is None or event.at > self._clock else self._clock
        self._clock = now
        queue = self._queue
        if not queue or queue[0][0] > now:  # nothing due: the hot path
            if isinstance(event, VitalSamples):
                return self._apply_samples(event, now)
            if isinstance(event, VitalSample):
                return self._apply_sample(event, now)
        out = self._advance(now)
        if isinstance(event, VitalSamples):
            out += self._apply_samples(event, now)
        elif isinstance(event, VitalSample):
            out += self._apply_sample(event, now)
        elif isinstance(event, News2Scored):
            bed = self._bed_for_data(event.bed, now)
            if bed is not None:
                bed.news2 = (event.total, event.red_score)
                out += self._evaluate_bed(event.bed, bed, now, _NEWS2_CONDITIONS)
        elif isinstance(event, Acknowledge):
            out += self._acknowledge(event, now)
        elif isinstance(event, PauseAudio):
            out += self._pause(event, now)
        elif isinstance(event, ConfigureBed):
            out += self._configure(event, now)
        elif isinstance(event, EndMonitoring):
            out += self._end_monitoring(event, now)
        return out

    def active_alarms(self, bed: str | None = None) -> list[ActiveAlarm]:
        """Raised, not yet cleared alarms, highest priority first, then oldest first."""
        if bed is None:
            beds: Iterable[tuple[str, _BedState]] = self._beds.items()
        else:
            beds = [(bed, self._beds[bed])] if bed in self._beds else []
        alarms = []
        for bed_id, state in beds:
            for key, condition in state.conditions.items():
                episode = condition.episode
                if episode is None:
                    continue
                alarms.append(
                    ActiveAlarm(
                        episode_id=episode.episode_id,
                        bed=bed_id,
                        condition=key,
                        priority=episode.priority,
                        raised_at=episode.raised_at,
                        tier=self.config.tiers[episode.tier],
                        condition_holds=episode.holds,
                        latched=episode.resolved,
                        acknowledged_by=episode.acknowledged_by,
                        acknowledged_at=episode.acknowledged_at,
                        paused_until=episode.paused_until,
                    )
                )
        alarms.sort(key=lambda a: (-a.priority.rank, a.raised_at, a.episode_id))
        return alarms

    def to_dict(self, taken: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready snapshot of the whole state (not the configuration, which is deployment code).

        ``taken``: beds already saved with :meth:`beds_to_dict`, earlier, between inputs; the other beds
        are saved now, and beds no longer monitored are left out. Beds share no state (episode ids are
        per bed), so a snapshot taken a few hundred beds at a time restores each bed as it was when taken.

        Due times and indexes are derived state, not saved (:meth:`from_dict` rebuilds them)."""
        taken = taken or {}
        return {
            "version": SNAPSHOT_VERSION,
            "clock": _iso(self._clock),
            "beds": {
                bed_id: taken[bed_id] if bed_id in taken else bed.to_dict()
                for bed_id, bed in self._beds.items()
            },
        }

    def bed_ids(self) -> list[str]:
        return list(self._beds)

    def beds_to_dict(self, bed_ids: Iterable[str]) -> dict[str, Any]:
        """These beds' part of :meth:`to_dict` (beds no longer known are skipped)."""
        beds = self._beds
        return {bed_id: beds[bed_id].to_dict() for bed_id in bed_ids if bed_id in beds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: AlarmConfig | None = None) -> AlarmEngine:
        """Resume from :meth:`to_dict` output; continues exactly as the engine that was saved."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported alarm-engine snapshot version {data.get('version')!r}")
        engine = cls(config)
        engine._clock = _from_iso(data["clock"])
        engine._beds = {bed_id: _BedState.from_dict(bed) for bed_id, bed in data["beds"].items()}
        for bed_id, bed in engine._beds.items():
            for key, state in bed.conditions.items():
                if state.episode is not None:
                    engine._episodes[state.episode.episode_id] = (bed_id, key)
            if bed.monitoring and engine._clock is not None:
                # Due now: the first input re-evaluates every monitored bed, as before saving, which
                # computes the due times from the state itself.
                engine._due[bed_id] = engine._queued[bed_id] = engine._clock
                engine._queue.append((engine._clock, bed_id))
        heapq.heapify(engine._queue)
        return engine

    # -- inputs ---------------------------------------------------------------------------------------

    def _new_bed(self, now: datetime) -> _BedState:
        return _BedState(
            population=Population.ADULT,
            limit_overrides={},
            no_data_timeouts=dict(self.config.no_data_timeouts),
            watch_started_at=now,
        )

    def _bed_for_data(self, bed_id: str, now: datetime) -> _BedState | None:
        bed = self._beds.get(bed_id)
        if bed is None:
            bed = self._beds[bed_id] = self._new_bed(now)
        return bed if bed.monitoring else None

    def _apply_sample(self, sample: VitalSample, now: datetime) -> list[AlarmEvent]:
        bed_id = sample.bed
        bed = self._beds.get(bed_id)
        if bed is None:
            bed = self._beds[bed_id] = self._new_bed(now)
        if not bed.monitoring or not _read(bed, sample.parameter, sample.value, sample.at):
            return []
        plan = bed.plan or self._plan(bed)
        return self._evaluate_bed(bed_id, bed, now, plan.sample_conditions[sample.parameter])

    def _apply_samples(self, event: VitalSamples, now: datetime) -> list[AlarmEvent]:
        bed_id = event.bed
        bed = self._beds.get(bed_id)
        if bed is None:
            bed = self._beds[bed_id] = self._new_bed(now)
        if not bed.monitoring:
            return []
        at = event.at
        read = tuple(parameter for parameter, value in event.samples if _read(bed, parameter, value, at))
        if not read:
            return []
        plan = bed.plan or self._plan(bed)
        return self._evaluate_bed(bed_id, bed, now, plan.conditions_of(read))

    def _configure(self, event: ConfigureBed, now: datetime) -> list[AlarmEvent]:
        names = {rule.name for rule in self.config.limit_tables.get(event.population, ())}
        unknown = sorted(set(event.limit_overrides) - names)
        if unknown:
            raise ValueError(f"unknown limit rule(s) for {event.population.value}: {', '.join(unknown)}")
        for name, limit in event.limit_overrides.items():
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)):
                raise ValueError(f"limit {name} must be a number or None, got {limit!r}")
        bed = self._beds.get(event.bed)
        if bed is None:
            bed = self._beds[event.bed] = self._new_bed(now)
        elif not bed.monitoring:
            bed.monitoring = True
            bed.watch_started_at = now
        bed.population = event.population
        bed.limit_overrides = {
            name: None if v is None else float(v) for name, v in event.limit_overrides.items()
        }
        if event.no_data_timeouts is not None:
            bed.no_data_timeouts = {Parameter(p): t for p, t in event.no_data_timeouts.items()}
        bed.plan = None  # the configuration changed
        return self._evaluate_bed(event.bed, bed, now)

    def _end_monitoring(self, event: EndMonitoring, now: datetime) -> list[AlarmEvent]:
        bed = self._beds.get(event.bed)
        if bed is None or not bed.monitoring:
            return []
        out = [
            self._event(
                EventKind.CLEARED,
                now,
                event.bed,
                key,
                state.episode,
                user=event.user,
                detail="monitoring ended",
            )
            for key, state in sorted(bed.conditions.items())
            if state.episode is not None
        ]
        for event_out in out:
            self._episodes.pop(event_out.episode_id, None)
        bed = self._beds[event.bed] = _BedState(
            population=bed.population,
            limit_overrides={},
            no_data_timeouts=dict(self.config.no_data_timeouts),
            watch_started_at=now,
            monitoring=False,
            sequence=bed.sequence,  # episode ids stay unique for the bed
        )
        self._schedule(event.bed, bed, now)
        return out

    def _find(self, episode_id: str) -> tuple[str, str, _Episode] | None:
        found = self._episodes.get(episode_id)
        if found is not None:
            bed_id, key = found
            state = self._beds[bed_id].conditions.get(key)
            if state is not None and state.episode is not None:
                return bed_id, key, state.episode
        return None

    def _acknowledge(self, event: Acknowledge, now: datetime) -> list[AlarmEvent]:
        found = self._find(event.episode_id)
        if found is None or found[2].acknowledged_at is not None:
            return []  # already cleared or acknowledged: nothing to do (a second click is harmless)
        bed_id, key, episode = found
        episode.acknowledged_by, episode.acknowledged_at = event.user, now
        episode.paused_until = None
        episode.next_escalation_at = None
        out = [self._event(EventKind.ACKNOWLEDGED, now, bed_id, key, episode, user=event.user)]
        bed = self._beds[bed_id]
        if episode.resolved:
            out.append(self._event(EventKind.CLEARED, now, bed_id, key, episode, user=event.user))
            bed.conditions.pop(key)
            self._episodes.pop(episode.episode_id, None)
        self._schedule(bed_id, bed, now)
        return out

    def _pause(self, event: PauseAudio, now: datetime) -> list[AlarmEvent]:
        if event.duration > self.config.max_pause:
            raise ValueError(f"a pause may last at most {self.config.max_pause}, asked {event.duration}")
        found = self._find(event.episode_id)
        if found is None or found[2].acknowledged_at is not None:
            return []  # cleared, or acknowledged (its audio is already off)
        bed_id, key, episode = found
        episode.paused_until = now + event.duration
        self._schedule(bed_id, self._beds[bed_id], now)
        return [
            self._event(
                EventKind.PAUSED, now, bed_id, key, episode, user=event.user, until=episode.paused_until
            )
        ]

    # -- scheduling -------------------------------------------------------------------------------------

    def _advance(self, now: datetime) -> list[AlarmEvent]:
        """Evaluate the beds that are due at ``now``, in bed order (as if every bed were evaluated)."""
        queue = self._queue
        if not queue or queue[0][0] > now:
            return []
        due_beds = []
        while queue and queue[0][0] <= now:
            queued_at, bed_id = heapq.heappop(queue)
            if self._queued.get(bed_id) != queued_at:
                continue  # superseded by an earlier entry
            del self._queued[bed_id]
            due = self._due.get(bed_id)
            if due is None:
                continue  # no longer monitored, or nothing left to time
            if due <= now:
                due_beds.append(bed_id)
            else:  # the due time moved later since this entry was queued
                self._queued[bed_id] = due
                heapq.heappush(queue, (due, bed_id))
        out: list[AlarmEvent] = []
        for bed_id in sorted(due_beds):
            out += self._evaluate_bed(bed_id, self._beds[bed_id], now)
        return out

    def _schedule(self, bed_id: str, bed: _BedState, now: datetime) -> None:
        """Record the bed's due time after its state changed (queued if earlier than its heap entry)."""
        due = self._next_due(bed, now)
        if due is None:
            self._due.pop(bed_id, None)
            return
        self._due[bed_id] = due
        queued = self._queued.get(bed_id)
        if queued is None or due < queued:
            self._queued[bed_id] = due
            heapq.heappush(self._queue, (due, bed_id))

    def _next_due(self, bed: _BedState, now: datetime) -> datetime | None:
        """The earliest time at which evaluating the bed, without a new input for it, can change
        anything (``None``: never). Mirrors every time comparison of :meth:`_zone` and :meth:`_evaluate`
        for a bed last evaluated at ``now``."""
        if not bed.monitoring:
            return None
        due: datetime | None = None
        started, last_valid_at = bed.watch_started_at, bed.last_valid_at
        for parameter, after in (bed.plan or self._plan(bed)).no_data_starts:
            last = last_valid_at.get(parameter, started)
            if last < started:
                last = started
            starts = last + after  # the first moment with now - last > timeout
            if starts > now and (due is None or starts < due):
                due = starts
        if not bed.conditions:
            return due
        for key, state in bed.conditions.items():
            episode = state.episode
            if episode is None:  # pending: raised once held for its delay
                timers = [(state.pending_since or now) + self._spec(bed, key)[1].delay]
            else:
                timers = []
                if not episode.resolved and episode.resolved_since is not None:
                    timers.append(episode.resolved_since + self._clear_hold(bed, key))
                if episode.paused_until is not None:
                    timers.append(episode.paused_until)
                elif (
                    episode.acknowledged_at is None
                    and episode.next_escalation_at is not None
                    and self._escalation_interval(key, episode.priority) is not None
                ):
                    # At the last tier already (one tier: just raised), the next evaluation drops it.
                    last_tier = len(self.config.tiers) - 1
                    timers.append(episode.next_escalation_at if episode.tier < last_tier else now)
            for timer in timers:
                if due is None or timer < due:
                    due = timer
        return due

    # -- evaluation -------------------------------------------------------------------------------------

    def _plan(self, bed: _BedState) -> _BedPlan:
        """The bed's effective limit rules (overridden limits applied, disabled ones left out) and the
        conditions a sample of each parameter can change; derived once per configuration."""
        if bed.plan is not None:
            return bed.plan
        checks = {}
        for rule in self.config.limit_tables.get(bed.population, ()):
            if rule.name in bed.limit_overrides:
                limit = bed.limit_overrides[rule.name]
                if limit is None:
                    continue
                rule = LimitRule(rule.name, rule.parameter, rule.direction, limit, rule.priority)
            margin = self.config.timings.get(rule.parameter, ConditionTiming()).clear_margin
            bound = rule.limit + margin if rule.direction is Direction.LOW else rule.limit - margin
            checks[rule.name] = _LimitCheck(
                rule, round(bound, 6), rule.direction is Direction.LOW, rule.parameter, rule.limit
            )
        plan = bed.plan = _BedPlan(
            checks=checks,
            conditions={},
            sample_conditions={},
            no_data_starts=tuple(
                (parameter, timeout + _RESOLUTION) for parameter, timeout in bed.no_data_timeouts.items()
            ),
        )
        for parameter in NUMERIC_PARAMETERS:
            keys = {f"limit:{name}" for name, check in checks.items() if check.rule.parameter is parameter}
            keys.update((f"sensor_off:{parameter.value}", f"implausible:{parameter.value}"))
            if parameter in bed.no_data_timeouts:
                keys.add(f"no_data:{parameter.value}")
            plan.sample_conditions[parameter] = tuple(plan.condition(key) for key in sorted(keys))
        return plan

    def _evaluate_bed(
        self, bed_id: str, bed: _BedState, now: datetime, only: Iterable[_Condition] | None = None
    ) -> list[AlarmEvent]:
        """Evaluate the bed's conditions in key order, or ``only`` those (in key order) when the caller
        knows that no other can have changed; then reschedule the bed."""
        plan = bed.plan or self._plan(bed)
        due = self._due.get(bed_id)
        if only is None or (due is not None and due <= now):  # due: the others may change too
            keys = set(bed.conditions)
            keys.update(f"limit:{name}" for name in plan.checks)
            if bed.news2 is not None:
                keys.update(_NEWS2_CONDITION_BANDS)
            for parameter in bed.readings:
                keys.update(condition.key for condition in plan.sample_conditions[parameter])
            keys.update(f"no_data:{parameter.value}" for parameter in bed.no_data_timeouts)
            only = [plan.condition(key) for key in sorted(keys)]
        out: list[AlarmEvent] = []
        states = bed.conditions
        zone_of = self._zone
        holds = _Zone.HOLDS
        for condition in only:
            zone = zone_of(bed, condition, now)
            if zone[0] is holds or condition.key in states:  # else nothing to do
                out += self._evaluate(bed_id, bed, condition, zone, now)
        self._schedule(bed_id, bed, now)
        return out

    def _zone(
        self, bed: _BedState, condition: _Condition, now: datetime
    ) -> tuple[_Zone, datetime | None, float | None]:
        """Where the condition stands now, since when it holds if that is known from the data alone
        (no-data timeouts), and the value behind it."""
        kind = condition.kind
        if kind == "limit":
            check = condition.check
            if check is None:
                return _CLEAR  # rule switched off or not in this population's table
            reading = bed.readings.get(check.parameter)
            if reading is None:
                return _UNKNOWN
            value = reading.value
            if value is None:
                return _UNKNOWN
            if check.low:  # LimitRule.violated_by, then back inside by the margin
                if value < check.limit:
                    return _Zone.HOLDS, None, value
                inside = value >= check.clear_bound
            else:
                if value > check.limit:
                    return _Zone.HOLDS, None, value
                inside = value <= check.clear_bound
            return (_Zone.CLEAR if inside else _Zone.DEAD_BAND), None, value
        if kind == "news2":
            if bed.news2 is None:
                return _Zone.UNKNOWN, None, None
            total, red = bed.news2
            bands = _NEWS2_CONDITION_BANDS.get(condition.key, frozenset())
            enabled = condition.name != "low" or self.config.news2_advisory
            holds = enabled and news2_band(total, red) in bands and total > 0
            return (_Zone.HOLDS if holds else _Zone.CLEAR), None, float(total)
        parameter = condition.parameter
        if parameter is None:  # only technical conditions are left, and they all name a parameter
            raise ValueError(f"not an alarm condition: {condition.key!r}")
        if kind == "no_data":
            timeout = bed.no_data_timeouts.get(parameter)
            if timeout is None:
                return _Zone.CLEAR, None, None
            last = max(bed.watch_started_at, bed.last_valid_at.get(parameter, bed.watch_started_at))
            if now - last > timeout:
                return _Zone.HOLDS, last + timeout, None
            return _CLEAR
        reading = bed.readings.get(parameter)
        if reading is None:
            return _CLEAR
        validity = reading.validity
        if validity is Validity.VALID:
            return _CLEAR
        wanted = Validity.SENSOR_OFF if kind == "sensor_off" else Validity.IMPLAUSIBLE
        return _HOLDS if validity is wanted else _CLEAR

    def _spec(self, bed: _BedState, key: str) -> tuple[Priority, ConditionTiming]:
        """Priority and timing of a condition that is about to be raised."""
        kind, _, name = key.partition(":")
        if kind == "limit":
            rule = self._plan(bed).checks[name].rule
            return rule.priority, self.config.timings.get(rule.parameter, ConditionTiming())
        if kind == "news2":
            return Priority(name), ConditionTiming()
        return self.config.technical_priorities[TechnicalCondition(kind)], ConditionTiming(
            self.config.technical_delay
        )

    def _clear_hold(self, bed: _BedState, key: str) -> timedelta:
        kind, _, name = key.partition(":")
        if kind != "limit":
            return timedelta(0)
        rule = self._tables.get(bed.population, {}).get(name)
        if rule is None:
            return timedelta(0)
        return self.config.timings.get(rule.parameter, ConditionTiming()).clear_hold

    def _escalation_interval(self, key: str, priority: Priority) -> timedelta | None:
        table = (
            self.config.news2_escalation_after if key.startswith("news2:") else self.config.escalation_after
        )
        return table.get(priority)

    def _evaluate(
        self,
        bed_id: str,
        bed: _BedState,
        condition: _Condition,
        zone_now: tuple[_Zone, datetime | None, float | None],
        now: datetime,
    ) -> list[AlarmEvent]:
        """One state machine step, given :meth:`_zone` now. Idempotent: evaluating twice at the same
        time changes nothing more."""
        key = condition.key
        zone, onset, value = zone_now
        state = bed.conditions.get(key)
        if state is None:
            if zone is not _Zone.HOLDS:
                return []
            state = bed.conditions[key] = _ConditionState()
        episode = state.episode
        if episode is None:
            if zone is not _Zone.HOLDS:
                bed.conditions.pop(key)  # a pending condition ended before its delay
                return []
            if state.pending_since is None:
                state.pending_since = onset or now
            priority, timing = self._spec(bed, key)
            if now - state.pending_since < timing.delay:
                return []
            bed.sequence += 1
            interval = self._escalation_interval(key, priority)
            state.pending_since = None
            state.episode = episode = _Episode(
                episode_id=f"{bed_id}/{key}/{bed.sequence}",
                priority=priority,
                latching=priority in self.config.latching,
                raised_at=now,
                value=value,
                next_escalation_at=None if interval is None else now + interval,
            )
            self._episodes[episode.episode_id] = (bed_id, key)
            return [self._event(EventKind.RAISED, now, bed_id, key, episode, value=value)]

        out: list[AlarmEvent] = []
        if zone is _Zone.HOLDS:
            episode.holds, episode.resolved, episode.resolved_since = True, False, None
            episode.value = value
        elif zone is _Zone.CLEAR:
            episode.holds = False
            if episode.resolved_since is None:
                episode.resolved_since = now
            if not episode.resolved and now - episode.resolved_since >= self._clear_hold(bed, key):
                episode.resolved = True
                if episode.latching and episode.acknowledged_at is None:
                    out.append(self._event(EventKind.LATCHED, now, bed_id, key, episode, value=value))
        else:  # dead band (no longer holds, not yet back inside) or no valid reading (frozen)
            if zone is _Zone.DEAD_BAND:
                episode.holds = False
            episode.resolved_since = None

        if episode.resolved and (not episode.latching or episode.acknowledged_at is not None):
            out.append(self._event(EventKind.CLEARED, now, bed_id, key, episode, value=value))
            bed.conditions.pop(key)
            self._episodes.pop(episode.episode_id, None)
            return out

        interval = self._escalation_interval(key, episode.priority)
        if episode.paused_until is not None and now >= episode.paused_until:
            episode.paused_until = None
            if episode.acknowledged_at is None:
                episode.next_escalation_at = None if interval is None else now + interval
                out.append(self._event(EventKind.RERAISED, now, bed_id, key, episode, value=episode.value))
        if episode.acknowledged_at is None and episode.paused_until is None and interval is not None:
            last_tier = len(self.config.tiers) - 1
            while episode.next_escalation_at is not None and now >= episode.next_escalation_at:
                if episode.tier >= last_tier:
                    episode.next_escalation_at = None
                    break
                episode.tier += 1
                episode.next_escalation_at += interval
                out.append(self._event(EventKind.ESCALATED, now, bed_id, key, episode, value=episode.value))
            if episode.tier >= last_tier:
                episode.next_escalation_at = None
        return out

    def _event(
        self,
        kind: EventKind,
        now: datetime,
        bed_id: str,
        key: str,
        episode: _Episode,
        *,
        user: str | None = None,
        value: float | None = None,
        until: datetime | None = None,
        detail: str | None = None,
    ) -> AlarmEvent:
        return AlarmEvent(
            kind=kind,
            at=now,
            bed=bed_id,
            condition=key,
            episode_id=episode.episode_id,
            priority=episode.priority,
            tier=self.config.tiers[min(episode.tier, len(self.config.tiers) - 1)],
            user=user,
            value=value,
            until=until,
            detail=detail,
        )


# ---------------------------------------------------------------------------------------------------
# Alarm burden


@dataclass(frozen=True)
class AlarmBurden:
    """Alarm burden over a period (§2.5 item 6): alarms/bed/day, % acknowledged, time to acknowledge."""

    alarms: int
    bed_days: float
    alarms_per_bed_day: float
    per_bed_day_by_priority: Mapping[Priority, float]
    per_bed_day_by_category: Mapping[str, float]
    alarms_by_bed: Mapping[str, int]
    acknowledged_fraction: float | None
    median_time_to_acknowledge: timedelta | None


def alarm_burden(events: Iterable[AlarmEvent], bed_days: float) -> AlarmBurden:
    """Alarm burden of an event stream (e.g. a replay) over ``bed_days`` monitored bed-days.

    An alarm is one RAISED episode (re-raises after a pause and escalations are the same alarm).
    ``bed_days`` is the denominator (beds × days monitored), given by the caller because the events
    alone do not show quiet beds.
    """
    if not bed_days > 0:
        raise ValueError("bed_days must be positive")
    raised: dict[str, AlarmEvent] = {}
    acknowledged: dict[str, datetime] = {}
    for event in events:
        if event.kind is EventKind.RAISED:
            raised[event.episode_id] = event
        elif event.kind is EventKind.ACKNOWLEDGED:
            acknowledged.setdefault(event.episode_id, event.at)
    by_priority = dict.fromkeys(Priority, 0.0)
    by_category = dict.fromkeys(("physiological", "score", "technical"), 0.0)
    by_bed: dict[str, int] = {}
    for event in raised.values():
        by_priority[event.priority] += 1 / bed_days
        by_category[event.category] += 1 / bed_days
        by_bed[event.bed] = by_bed.get(event.bed, 0) + 1
    delays = [acknowledged[e] - r.at for e, r in raised.items() if e in acknowledged]
    return AlarmBurden(
        alarms=len(raised),
        bed_days=bed_days,
        alarms_per_bed_day=len(raised) / bed_days,
        per_bed_day_by_priority=MappingProxyType(by_priority),
        per_bed_day_by_category=MappingProxyType(by_category),
        alarms_by_bed=MappingProxyType(by_bed),
        acknowledged_fraction=len(delays) / len(raised) if raised else None,
        median_time_to_acknowledge=(
            timedelta(microseconds=statistics.median(_micros(d) for d in delays)) if delays else None
        ),
    )
