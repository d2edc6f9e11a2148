"""Vital-sign observations: which values are physiology, how they are rounded, which are current.

Early-warning scores and alarms are only as good as their inputs. Monitors send sentinels (0, -100,
0x7FFFFF) when a sensor is off, decimals where the score charts expect integers, and intermittent
parameters (NIBP, temperature, nursing charting) arrive minutes to hours apart. This module decides
those questions once, for every consumer:

- :func:`classify_measurement`: VALID, SENSOR_OFF (a technical condition, not physiology) or
  IMPLAUSIBLE (outside what a living patient can show: artefact);
- :func:`round_for_banding`: half-up rounding before banding (project decision, docs/monitoring.md
  §1.1 "Guidance"), never Python's round-half-to-even;
- :func:`current_vital_set`: merges per-parameter measurements into one :class:`VitalSet` and drops
  values older than a per-parameter maximum age (:data:`DEFAULT_MAX_AGE`) instead of reusing them.

Pure: standard library only; time is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Parameter(StrEnum):
    """One observed quantity. Values are the JSON/API keys."""

    RESPIRATORY_RATE = "respiratory_rate"  # breaths/min
    SPO2 = "spo2"  # %
    ON_OXYGEN = "on_oxygen"  # bool: any supplemental O2 incl. NIV (nursing charting)
    SYSTOLIC_BP = "systolic_bp"  # mmHg
    DIASTOLIC_BP = "diastolic_bp"  # mmHg
    MEAN_BP = "mean_bp"  # mmHg
    PULSE = "pulse"  # heart/pulse rate, beats/min
    CONSCIOUSNESS = "consciousness"  # ACVPU letter (nursing charting)
    TEMPERATURE = "temperature"  # °C


NUMERIC_PARAMETERS: frozenset[Parameter] = frozenset(
    {
        Parameter.RESPIRATORY_RATE,
        Parameter.SPO2,
        Parameter.SYSTOLIC_BP,
        Parameter.DIASTOLIC_BP,
        Parameter.MEAN_BP,
        Parameter.PULSE,
        Parameter.TEMPERATURE,
    }
)

#: ACVPU: Alert, new Confusion, responds to Voice, to Pain, Unresponsive.
CONSCIOUSNESS_LEVELS: tuple[str, ...] = ("A", "C", "V", "P", "U")

#: Values a device sends for "no valid reading". -100 is Mindray's invalid marker; 8388606..8388610 are
#: the IEEE 11073-20601 FLOAT special values (+INF, NaN = 0x7FFFFF, NRes, reserved, -INF) when a
#: gateway decodes the 24-bit mantissa as an unsigned integer. Zero and negative values are handled by
#: rule (see :func:`classify_measurement`), NaN/inf likewise.
SENSOR_OFF_SENTINELS: frozenset[float] = frozenset(
    {-100.0, 8388606.0, 8388607.0, 8388608.0, 8388609.0, 8388610.0}
)

#: Inclusive range of values (after rounding) a living, monitored patient can show. Deliberately wide:
#: a value outside is artefact; a value inside but extreme must reach the alarms (a true SpO2 of 40 %
#: must never be hidden as "implausible"). Zero and negatives are SENSOR_OFF, not in these ranges.
PLAUSIBLE_RANGES: Mapping[Parameter, tuple[float, float]] = MappingProxyType(
    {
        Parameter.RESPIRATORY_RATE: (1.0, 150.0),
        Parameter.SPO2: (1.0, 100.0),
        Parameter.SYSTOLIC_BP: (1.0, 300.0),
        Parameter.DIASTOLIC_BP: (1.0, 250.0),
        Parameter.MEAN_BP: (1.0, 270.0),
        Parameter.PULSE: (1.0, 300.0),
        Parameter.TEMPERATURE: (25.0, 45.0),
    }
)

#: How long a value may stand for "now". Continuous monitoring refreshes RR/SpO2/HR every few seconds,
#: so 5 min old means the stream stopped; NIBP cycles every 15-60 min; temperature is charted 4-hourly at
#: best; ACVPU and oxygen come from nursing charting (12-hourly minimum for NEWS2 0). Override per ward.
DEFAULT_MAX_AGE: Mapping[Parameter, timedelta] = MappingProxyType(
    {
        Parameter.RESPIRATORY_RATE: timedelta(minutes=5),
        Parameter.SPO2: timedelta(minutes=5),
        Parameter.PULSE: timedelta(minutes=5),
        Parameter.SYSTOLIC_BP: timedelta(minutes=60),
        Parameter.DIASTOLIC_BP: timedelta(minutes=60),
        Parameter.MEAN_BP: timedelta(minutes=60),
        Parameter.TEMPERATURE: timedelta(hours=4),
        Parameter.CONSCIOUSNESS: timedelta(hours=12),
        Parameter.ON_OXYGEN: timedelta(hours=12),
    }
)


#: A device report's parameter names (ingest) → the parameters the scores and the alarm engine use.
TO_ENGINE = {
    "heart_rate": Parameter.PULSE,
    "spo2": Parameter.SPO2,
    "respiratory_rate": Parameter.RESPIRATORY_RATE,
    "systolic_bp": Parameter.SYSTOLIC_BP,
    "diastolic_bp": Parameter.DIASTOLIC_BP,
    "mean_bp": Parameter.MEAN_BP,
    "temperature": Parameter.TEMPERATURE,
}


class Validity(StrEnum):
    VALID = "valid"
    SENSOR_OFF = "sensor_off"  # technical condition: no reading (sentinel, zero, negative, NaN)
    IMPLAUSIBLE = "implausible"  # a number no living patient shows: artefact


class Exclusion(StrEnum):
    """Why :func:`current_vital_set` left a parameter out."""

    STALE = "stale"
    SENSOR_OFF = "sensor_off"
    IMPLAUSIBLE = "implausible"


MeasuredValue = float | bool | str


def round_half_up(value: float, ndigits: int = 0) -> float:
    """Round to ``ndigits`` decimals, ties away from zero, on the decimal value as written.

    ``Decimal(repr(x))`` uses the shortest decimal that round-trips, so 38.05 rounds to 38.1 although
    the binary double is 38.0499999…; Python's ``round`` would give 38.0 (and 20.5 -> 20).
    """
    number = float(value)
    cacheable = ndigits.__class__ is int
    if cacheable:
        known = _ROUNDED.get((number, ndigits))
        if known is not None:
            return known
    quantum = Decimal(1).scaleb(-ndigits)
    result = float(Decimal(repr(number)).quantize(quantum, rounding=ROUND_HALF_UP))
    if cacheable and number != 0 and number == number:  # 0.0 and -0.0 share a key; NaN never hits
        if len(_ROUNDED) > 16_384:
            _ROUNDED.clear()
        _ROUNDED[number, ndigits] = result
    return result


#: round_half_up results by (value, ndigits): monitors repeat the same few hundred values.
_ROUNDED: dict[tuple[float, int], float] = {}


def round_for_banding(parameter: Parameter, value: float) -> float:
    """The value as scores and alarms see it: temperature to 0.1 °C, every other number to an integer."""
    if value.__class__ is float and parameter.__class__ is Parameter:  # the hot path: no bool, no str
        known = _ROUNDED.get((value, _BANDING_DIGITS[parameter]))
        if known is not None and parameter in NUMERIC_PARAMETERS:
            return known
    number = _require_number(parameter, value)
    return round_half_up(number, 1 if parameter is Parameter.TEMPERATURE else 0)


_BANDING_DIGITS: dict[Parameter, int] = {
    parameter: 1 if parameter is Parameter.TEMPERATURE else 0 for parameter in Parameter
}


_ALL_PARAMETERS = tuple(Parameter)
_CLASSIFIED: dict[tuple[Parameter, type, MeasuredValue], Validity] = {}  # numbers seen before: the hot path
_PLAIN_TYPES = frozenset({float, int, str, bool})


def classify_measurement(parameter: Parameter, value: MeasuredValue) -> Validity:
    """Whether a measurement is physiology (remembered per parameter, type and value; see _classify)."""
    kind = type(value)
    if kind not in _PLAIN_TYPES and not isinstance(value, int | float | str):
        return _classify(parameter, value)  # the wrong type: let it say so
    key = (parameter, kind, value)  # the type keeps True apart from 1 (equal, and equally hashed)
    known = _CLASSIFIED.get(key)
    if known is None:
        known = _classify(parameter, value)
        if len(_CLASSIFIED) > 16_384:
            _CLASSIFIED.clear()
        _CLASSIFIED[key] = known
    return known


def _classify(parameter: Parameter, value: MeasuredValue) -> Validity:
    """Whether a measurement is physiology.

    Numbers: NaN, ±inf, the sentinels, and anything that rounds to zero or below are SENSOR_OFF (a
    monitor reports 0 when the probe is off; no monitored patient has an SpO2, rate, pressure or
    temperature of 0); outside :data:`PLAUSIBLE_RANGES` after rounding is IMPLAUSIBLE.
    ``on_oxygen`` (bool) and ``consciousness`` (ACVPU letter) are charted, so always VALID when
    well-typed. A wrong type or an unknown ACVPU letter is a programming error: ``ValueError``.
    """
    if parameter is Parameter.ON_OXYGEN:
        if not isinstance(value, bool):
            raise ValueError(f"on_oxygen must be true or false, got {value!r}")
        return Validity.VALID
    if parameter is Parameter.CONSCIOUSNESS:
        if value not in CONSCIOUSNESS_LEVELS:
            raise ValueError(f"consciousness must be one of {', '.join(CONSCIOUSNESS_LEVELS)}, got {value!r}")
        return Validity.VALID
    number = _require_number(parameter, value)
    if not math.isfinite(number) or number in SENSOR_OFF_SENTINELS:
        return Validity.SENSOR_OFF
    rounded = round_for_banding(parameter, number)
    if rounded <= 0:
        return Validity.SENSOR_OFF
    low, high = PLAUSIBLE_RANGES[parameter]
    if not low <= rounded <= high:
        return Validity.IMPLAUSIBLE
    return Validity.VALID


def _require_number(parameter: Parameter, value: object) -> float:
    if parameter not in NUMERIC_PARAMETERS:
        raise ValueError(f"{parameter.value} is not a numeric parameter")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{parameter.value} must be a number, got {value!r}")
    return float(value)


def _require_aware(name: str, moment: object) -> datetime:
    if type(moment) is datetime and type(moment.tzinfo) is timezone:  # a fixed offset: always aware
        return moment
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment


@dataclass(frozen=True)
class Measurement:
    """One value of one parameter at one time, as a device or a nurse reported it."""

    parameter: Parameter
    value: MeasuredValue
    observed_at: datetime

    def __post_init__(self) -> None:
        if self.parameter.__class__ is not Parameter:  # already a member: nothing to convert
            object.__setattr__(self, "parameter", Parameter(self.parameter))
        _require_aware("observed_at", self.observed_at)

    @classmethod
    def trusted(cls, parameter: Parameter, value: MeasuredValue, observed_at: datetime) -> Measurement:
        """A measurement of arguments the caller has checked (a member, an aware time): a device stream's hot
        path, without the checks of the constructor."""
        measurement = object.__new__(cls)
        measurement.__dict__.update(parameter=parameter, value=value, observed_at=observed_at)
        return measurement

    @property
    def validity(self) -> Validity:
        return classify_measurement(self.parameter, self.value)


@dataclass(frozen=True)
class VitalSet:
    """One observation set for one patient: every value is physiology (validated here) or absent.

    Values are kept as measured (scores round them); ``observed_at`` says when each present value was
    measured; ``excluded`` says why :func:`current_vital_set` left a parameter out. ``spo2_scale`` is a
    clinician's order (NEWS2 Scale 2 only under medical direction); ``None`` means no Scale 2 order.
    Constructing a set with a sentinel or an implausible value raises ``ValueError``, so a probe-off 0
    can never be scored as bradycardia.
    """

    respiratory_rate: float | None = None
    spo2: float | None = None
    spo2_scale: int | None = None
    on_oxygen: bool | None = None
    systolic_bp: float | None = None
    diastolic_bp: float | None = None
    mean_bp: float | None = None
    pulse: float | None = None
    consciousness: str | None = None
    temperature: float | None = None
    observed_at: Mapping[Parameter, datetime] = field(default_factory=dict, hash=False)
    excluded: Mapping[Parameter, Exclusion] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.spo2_scale is not None and (
            isinstance(self.spo2_scale, bool) or self.spo2_scale not in (1, 2)
        ):
            raise ValueError(f"spo2_scale must be 1 or 2, got {self.spo2_scale!r}")
        for parameter in _ALL_PARAMETERS:
            value = getattr(self, parameter.value)
            if value is None:
                continue
            validity = classify_measurement(parameter, value)
            if validity is not Validity.VALID:
                raise ValueError(
                    f"{parameter.value}={value!r} is {validity.value.replace('_', ' ')}, not physiology"
                )
        observed = {Parameter(p): _require_aware(f"observed_at[{p}]", t) for p, t in self.observed_at.items()}
        excluded = {Parameter(p): Exclusion(e) for p, e in self.excluded.items()}
        object.__setattr__(self, "observed_at", MappingProxyType(observed))
        object.__setattr__(self, "excluded", MappingProxyType(excluded))

    def value(self, parameter: Parameter) -> MeasuredValue | None:
        """The value of ``parameter`` (``None`` when absent)."""
        name = parameter.value if isinstance(parameter, Parameter) else Parameter(parameter).value
        result: MeasuredValue | None = getattr(self, name)
        return result


def current_vital_set(
    measurements: Iterable[Measurement],
    now: datetime,
    *,
    spo2_scale: int | None = None,
    max_age: Mapping[Parameter, timedelta] | None = None,
) -> VitalSet:
    """The "current" observation set at ``now`` from a stream of per-parameter measurements.

    Per parameter, the latest measurement observed at or before ``now`` decides (later ones belong to a
    later evaluation; among equal times the last one given wins):

    - older than its maximum age (``max_age`` entries override :data:`DEFAULT_MAX_AGE`) -> dropped as
      STALE: a value is never carried forward past its age;
    - SENSOR_OFF or IMPLAUSIBLE -> dropped with that reason. An older valid value is *not* used in its
      place: the newest information is that the reading is invalid, and hiding that would mask the
      technical condition.
    """
    _require_aware("now", now)
    if max_age is None:
        ages: Mapping[Parameter, timedelta] = _DEFAULT_AGES
    else:
        ages = dict(DEFAULT_MAX_AGE)
        ages.update({Parameter(p): age for p, age in max_age.items()})
    latest: dict[Parameter, Measurement] = {}
    for measurement in measurements:
        at = measurement.observed_at
        if at > now:
            continue
        previous = latest.get(measurement.parameter)
        if previous is None or at >= previous.observed_at:
            latest[measurement.parameter] = measurement
    values: dict[Parameter, MeasuredValue] = {}
    observed: dict[Parameter, datetime] = {}
    excluded: dict[Parameter, Exclusion] = {}
    for parameter, measurement in latest.items():
        key = parameter if parameter.__class__ is Parameter else Parameter(parameter)
        if now - measurement.observed_at > ages[parameter]:
            excluded[key] = Exclusion.STALE
            continue
        validity = measurement.validity
        if validity is not Validity.VALID:
            excluded[key] = _EXCLUSIONS[validity]
            continue
        values[key] = measurement.value
        observed[key] = measurement.observed_at

    if spo2_scale is not None and (isinstance(spo2_scale, bool) or spo2_scale not in (1, 2)):
        raise ValueError(f"spo2_scale must be 1 or 2, got {spo2_scale!r}")
    consciousness = values.get(Parameter.CONSCIOUSNESS)
    if consciousness is not None and consciousness.__class__ is not str:  # rare: validate it all again
        return _checked_vital_set(values, observed, excluded, spo2_scale)
    # Every value is a measurement classified VALID just above, and float()/bool() of a valid number or
    # flag is just as valid: VitalSet's own checks would find nothing, so they are skipped.
    fields: dict[str, object] = dict.fromkeys(_VALUE_FIELDS)
    for parameter, value in values.items():
        name, convert = _CONVERSIONS[parameter]
        fields[name] = convert(value)
    fields["spo2_scale"] = spo2_scale
    fields["observed_at"] = MappingProxyType(observed)
    fields["excluded"] = MappingProxyType(excluded)
    vital_set = object.__new__(VitalSet)
    vital_set.__dict__.update(fields)
    return vital_set


def _checked_vital_set(
    values: Mapping[Parameter, MeasuredValue],
    observed: Mapping[Parameter, datetime],
    excluded: Mapping[Parameter, Exclusion],
    spo2_scale: int | None,
) -> VitalSet:
    def number(parameter: Parameter) -> float | None:
        value = values.get(parameter)
        return None if value is None else float(value)

    on_oxygen = values.get(Parameter.ON_OXYGEN)
    consciousness = values.get(Parameter.CONSCIOUSNESS)
    return VitalSet(
        respiratory_rate=number(Parameter.RESPIRATORY_RATE),
        spo2=number(Parameter.SPO2),
        spo2_scale=spo2_scale,
        on_oxygen=None if on_oxygen is None else bool(on_oxygen),
        systolic_bp=number(Parameter.SYSTOLIC_BP),
        diastolic_bp=number(Parameter.DIASTOLIC_BP),
        mean_bp=number(Parameter.MEAN_BP),
        pulse=number(Parameter.PULSE),
        consciousness=None if consciousness is None else str(consciousness),
        temperature=number(Parameter.TEMPERATURE),
        observed_at=observed,
        excluded=excluded,
    )


_DEFAULT_AGES: dict[Parameter, timedelta] = dict(DEFAULT_MAX_AGE)
_EXCLUSIONS: dict[Validity, Exclusion] = {
    Validity.SENSOR_OFF: Exclusion.SENSOR_OFF,
    Validity.IMPLAUSIBLE: Exclusion.IMPLAUSIBLE,
}
#: VitalSet's fields up to ``temperature``, in declaration order (``observed_at`` and ``excluded`` follow).
_VALUE_FIELDS: tuple[str, ...] = (
    "respiratory_rate",
    "spo2",
    "spo2_scale",
    "on_oxygen",
    "systolic_bp",
    "diastolic_bp",
    "mean_bp",
    "pulse",
    "consciousness",
    "temperature",
)
#: Per parameter: its VitalSet field and the conversion current_vital_set applies to a valid value.
_CONVERSIONS: dict[Parameter, tuple[str, Callable[[Any], MeasuredValue]]] = {
    parameter: (
        parameter.value,
        bool if parameter is Parameter.ON_OXYGEN else str if parameter is Parameter.CONSCIOUSNESS else float,
    )
    for parameter in Parameter
}
