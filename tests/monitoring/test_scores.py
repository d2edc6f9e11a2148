"""Vital-sign validity, rounding and staleness; NEWS2, MEWS and qSOFA against docs/monitoring.md §1.

Oracles come from the document (the 12 NEWS2 vectors, the boundary list, the MEWS and qSOFA vectors) and
from an independent range table transcribed from RCP Chart 1, checked exhaustively over every integer
(every 0.1 °C for temperature) rather than only at the boundaries.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tianfu.monitoring.scores import (
    NEWS2_PARAMETERS,
    RiskBand,
    early_warning_scores,
    mews,
    news2,
    news2_band,
    news2_from_mapping,
    news2_response,
    qsofa,
)
from tianfu.monitoring.vitals import (
    DEFAULT_MAX_AGE,
    Exclusion,
    Measurement,
    Parameter,
    Validity,
    VitalSet,
    classify_measurement,
    current_vital_set,
    round_for_banding,
    round_half_up,
)

NOW = datetime(2025, 6, 11, 8, 30, tzinfo=UTC)
NORMAL = {
    "respiratory_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 37.0,
}


def vitals(**changes: object) -> VitalSet:
    values: dict[str, object] = {**NORMAL, **changes}
    return VitalSet(**values)  # type: ignore[arg-type]


def subscore(name: str, value: object, **context: object) -> int | None:
    return news2(vitals(**{name: value}, **context)).subscores[name]


# --------------------------------------------------------------------------------------------------
# vitals: classification, rounding, staleness


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        (Parameter.PULSE, 0, Validity.SENSOR_OFF),
        (Parameter.SPO2, 0, Validity.SENSOR_OFF),
        (Parameter.RESPIRATORY_RATE, 0, Validity.SENSOR_OFF),
        (Parameter.RESPIRATORY_RATE, 0.4, Validity.SENSOR_OFF),  # rounds to 0
        (Parameter.SYSTOLIC_BP, 0, Validity.SENSOR_OFF),
        (Parameter.TEMPERATURE, 0.0, Validity.SENSOR_OFF),
        (Parameter.PULSE, -1, Validity.SENSOR_OFF),
        (Parameter.SPO2, -100, Validity.SENSOR_OFF),
        (Parameter.PULSE, 8388607, Validity.SENSOR_OFF),
        (Parameter.SYSTOLIC_BP, 8388608, Validity.SENSOR_OFF),
        (Parameter.TEMPERATURE, math.nan, Validity.SENSOR_OFF),
        (Parameter.PULSE, math.inf, Validity.SENSOR_OFF),
        (Parameter.PULSE, 300, Validity.VALID),
        (Parameter.PULSE, 300.4, Validity.VALID),
        (Parameter.PULSE, 301, Validity.IMPLAUSIBLE),
        (Parameter.PULSE, 1, Validity.VALID),
        (Parameter.SPO2, 100, Validity.VALID),
        (Parameter.SPO2, 100.4, Validity.VALID),
        (Parameter.SPO2, 100.5, Validity.IMPLAUSIBLE),
        (Parameter.SPO2, 101, Validity.IMPLAUSIBLE),
        (Parameter.SPO2, 40, Validity.VALID),  # extreme but real: must reach the alarms
        (Parameter.SYSTOLIC_BP, 300, Validity.VALID),
        (Parameter.SYSTOLIC_BP, 301, Validity.IMPLAUSIBLE),
        (Parameter.TEMPERATURE, 25.0, Validity.VALID),
        (Parameter.TEMPERATURE, 24.9, Validity.IMPLAUSIBLE),
        (Parameter.TEMPERATURE, 45.0, Validity.VALID),
        (Parameter.TEMPERATURE, 45.1, Validity.IMPLAUSIBLE),
        (Parameter.RESPIRATORY_RATE, 151, Validity.IMPLAUSIBLE),
        (Parameter.ON_OXYGEN, True, Validity.VALID),
        (Parameter.CONSCIOUSNESS, "U", Validity.VALID),
    ],
)
def test_classify_measurement(parameter: Parameter, value: object, expected: Validity) -> None:
    assert classify_measurement(parameter, value) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        (Parameter.PULSE, "70"),
        (Parameter.PULSE, True),
        (Parameter.ON_OXYGEN, 1),
        (Parameter.CONSCIOUSNESS, "X"),
        (Parameter.CONSCIOUSNESS, "a"),
    ],
)
def test_classify_measurement_rejects_wrong_types(parameter: Parameter, value: object) -> None:
    with pytest.raises(ValueError, match=parameter.value):
        classify_measurement(parameter, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "ndigits", "expected"),
    [
        (0.5, 0, 1.0),
        (1.5, 0, 2.0),
        (2.5, 0, 3.0),  # Python's round() gives 2
        (20.5, 0, 21.0),
        (20.49, 0, 20.0),
        (38.05, 1, 38.1),  # the binary double is 38.0499…; round() gives 38.0
        (36.05, 1, 36.1),
        (35.04, 1, 35.0),
        (-2.5, 0, -3.0),
    ],
)
def test_round_half_up(value: float, ndigits: int, expected: float) -> None:
    assert round_half_up(value, ndigits) == expected


def test_round_for_banding_uses_tenths_for_temperature_only() -> None:
    assert round_for_banding(Parameter.TEMPERATURE, 38.05) == 38.1
    assert round_for_banding(Parameter.PULSE, 90.5) == 91
    assert round_for_banding(Parameter.SPO2, 95.5) == 96
    with pytest.raises(ValueError, match="numeric"):
        round_for_banding(Parameter.CONSCIOUSNESS, 1)


def test_vital_set_rejects_values_that_are_not_physiology() -> None:
    with pytest.raises(ValueError, match="pulse=0 is sensor off"):
        VitalSet(pulse=0)
    with pytest.raises(ValueError, match="implausible"):
        VitalSet(spo2=101)
    with pytest.raises(ValueError, match="spo2_scale"):
        VitalSet(spo2_scale=3)
    with pytest.raises(ValueError, match="spo2_scale"):
        VitalSet(spo2_scale=True)
    with pytest.raises(ValueError, match="timezone-aware"):
        VitalSet(pulse=70, observed_at={Parameter.PULSE: datetime(2025, 1, 1)})  # noqa: DTZ001


def test_vital_set_is_immutable_and_comparable() -> None:
    first = VitalSet(pulse=70, observed_at={Parameter.PULSE: NOW})
    assert first == VitalSet(pulse=70, observed_at={Parameter.PULSE: NOW})
    with pytest.raises(TypeError):
        first.observed_at[Parameter.SPO2] = NOW  # type: ignore[index]
    assert first.value(Parameter.PULSE) == 70
    assert first.value(Parameter.SPO2) is None


def minutes_ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def test_default_max_ages_cover_every_parameter() -> None:
    assert set(DEFAULT_MAX_AGE) == set(Parameter)
    assert DEFAULT_MAX_AGE[Parameter.PULSE] == timedelta(minutes=5)
    assert DEFAULT_MAX_AGE[Parameter.SYSTOLIC_BP] == timedelta(minutes=60)
    assert DEFAULT_MAX_AGE[Parameter.TEMPERATURE] == timedelta(hours=4)
    assert DEFAULT_MAX_AGE[Parameter.CONSCIOUSNESS] == timedelta(hours=12)


def test_current_vital_set_takes_the_latest_fresh_value_per_parameter() -> None:
    stream = [
        Measurement(Parameter.PULSE, 80, minutes_ago(3)),
        Measurement(Parameter.PULSE, 96, minutes_ago(1)),
        Measurement(Parameter.SYSTOLIC_BP, 104, minutes_ago(5)),
        Measurement(Parameter.TEMPERATURE, 37.8, minutes_ago(30)),
        Measurement(Parameter.CONSCIOUSNESS, "A", minutes_ago(600)),
        Measurement(Parameter.ON_OXYGEN, False, minutes_ago(600)),
    ]
    current = current_vital_set(stream, NOW, spo2_scale=2)
    assert current.pulse == 96
    assert current.systolic_bp == 104
    assert current.temperature == 37.8
    assert current.consciousness == "A"
    assert current.on_oxygen is False
    assert current.spo2_scale == 2
    assert current.observed_at[Parameter.PULSE] == minutes_ago(1)
    assert current.excluded == {}


def test_current_vital_set_drops_stale_values_never_reusing_them() -> None:
    stream = [
        Measurement(Parameter.PULSE, 96, minutes_ago(5)),  # exactly the maximum age: still current
        Measurement(Parameter.SPO2, 95, minutes_ago(5.01)),
        Measurement(Parameter.SYSTOLIC_BP, 104, minutes_ago(61)),
        Measurement(Parameter.TEMPERATURE, 37.8, minutes_ago(241)),
        Measurement(Parameter.CONSCIOUSNESS, "A", minutes_ago(12 * 60 + 1)),
    ]
    current = current_vital_set(stream, NOW)
    assert current.pulse == 96
    assert current.spo2 is None
    assert current.systolic_bp is None
    assert current.temperature is None
    assert current.consciousness is None
    assert current.excluded == {
        Parameter.SPO2: Exclusion.STALE,
        Parameter.SYSTOLIC_BP: Exclusion.STALE,
        Parameter.TEMPERATURE: Exclusion.STALE,
        Parameter.CONSCIOUSNESS: Exclusion.STALE,
    }
    assert Parameter.SPO2 not in current.observed_at


def test_current_vital_set_max_age_is_overridable() -> None:
    stream = [Measurement(Parameter.SYSTOLIC_BP, 104, minutes_ago(61))]
    current = current_vital_set(stream, NOW, max_age={Parameter.SYSTOLIC_BP: timedelta(minutes=90)})
    assert current.systolic_bp == 104


def test_current_vital_set_does_not_fall_back_past_an_invalid_latest_value() -> None:
    stream = [
        Measurement(Parameter.SPO2, 95, minutes_ago(2)),
        Measurement(Parameter.SPO2, 0, minutes_ago(1)),
        Measurement(Parameter.PULSE, 80, minutes_ago(2)),
        Measurement(Parameter.PULSE, 400, minutes_ago(1)),
    ]
    current = current_vital_set(stream, NOW)
    assert current.spo2 is None
    assert current.pulse is None
    assert current.excluded == {Parameter.SPO2: Exclusion.SENSOR_OFF, Parameter.PULSE: Exclusion.IMPLAUSIBLE}


def test_current_vital_set_ignores_the_future_and_lets_the_last_of_equal_times_win() -> None:
    stream = [
        Measurement(Parameter.PULSE, 80, NOW),
        Measurement(Parameter.PULSE, 82, NOW),
        Measurement(Parameter.PULSE, 140, NOW + timedelta(seconds=1)),
    ]
    assert current_vital_set(stream, NOW).pulse == 82


def test_current_vital_set_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        current_vital_set([], datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        Measurement(Parameter.PULSE, 80, datetime(2025, 1, 1))  # noqa: DTZ001


# --------------------------------------------------------------------------------------------------
# NEWS2: the document's 12 vectors

VECTORS = [
    # RR, SpO2, scale, O2, SBP, HR, ACVPU, T, subscores RR/SpO2/O2/SBP/HR/C/T, total, band
    (16, 97, 1, False, 120, 70, "A", 37.0, (0, 0, 0, 0, 0, 0, 0), 0, RiskBand.LOW),
    (21, 95, 1, False, 110, 91, "A", 38.1, (2, 1, 0, 1, 1, 0, 1), 6, RiskBand.MEDIUM),
    (25, 97, 1, False, 120, 70, "A", 37.0, (3, 0, 0, 0, 0, 0, 0), 3, RiskBand.LOW_MEDIUM),
    (8, 91, 1, True, 90, 131, "V", 35.0, (3, 3, 2, 3, 3, 3, 3), 20, RiskBand.HIGH),
    (18, 90, 2, True, 130, 80, "A", 36.5, (0, 0, 2, 0, 0, 0, 0), 2, RiskBand.LOW),
    (18, 97, 2, True, 130, 80, "A", 36.5, (0, 3, 2, 0, 0, 0, 0), 5, RiskBand.MEDIUM),
    (18, 95, 2, False, 130, 80, "A", 36.5, (0, 0, 0, 0, 0, 0, 0), 0, RiskBand.LOW),
    (18, 95, 1, False, 130, 80, "A", 36.5, (0, 1, 0, 0, 0, 0, 0), 1, RiskBand.LOW),
    (16, 97, 1, False, 120, 70, "C", 37.0, (0, 0, 0, 0, 0, 3, 0), 3, RiskBand.LOW_MEDIUM),
    (24, 94, 1, False, 120, 111, "A", 39.1, (2, 1, 0, 0, 2, 0, 2), 7, RiskBand.HIGH),
    (12, 96, 1, False, 219, 51, "A", 36.1, (0, 0, 0, 0, 0, 0, 0), 0, RiskBand.LOW),
    (11, 96, 1, False, 220, 50, "A", 36.0, (1, 0, 0, 3, 1, 0, 1), 6, RiskBand.MEDIUM),
]


@pytest.mark.parametrize("vector", VECTORS, ids=[f"vector-{i}" for i in range(1, 13)])
def test_news2_document_vectors(vector: tuple[object, ...]) -> None:
    rr, spo2, scale, oxygen, sbp, hr, acvpu, temp, subscores, total, band = vector
    result = news2(
        VitalSet(
            respiratory_rate=rr,  # type: ignore[arg-type]
            spo2=spo2,  # type: ignore[arg-type]
            spo2_scale=scale,  # type: ignore[arg-type]
            on_oxygen=oxygen,  # type: ignore[arg-type]
            systolic_bp=sbp,  # type: ignore[arg-type]
            pulse=hr,  # type: ignore[arg-type]
            consciousness=acvpu,  # type: ignore[arg-type]
            temperature=temp,  # type: ignore[arg-type]
        )
    )
    assert tuple(result.subscores[name] for name in NEWS2_PARAMETERS) == subscores
    assert result.total == total
    assert result.band is band
    assert not result.partial
    assert result.spo2_scale == scale


def test_news2_vector_frequencies() -> None:
    assert news2(vitals()).response.frequency == "12-hourly"
    assert news2(vitals(spo2=95)).response.frequency == "4-6-hourly"
    assert news2(vitals(respiratory_rate=25)).response.frequency == "1-hourly"
    assert news2(
        vitals(respiratory_rate=21, spo2=95, systolic_bp=110, pulse=91, temperature=38.1)
    ).response.key == ("urgent-response")
    worst = news2(
        vitals(respiratory_rate=8, spo2=91, on_oxygen=True, systolic_bp=90, pulse=131, temperature=35.0)
    )
    assert worst.response.frequency == "continuous"
    assert worst.response.reobservation_interval is None


# --------------------------------------------------------------------------------------------------
# NEWS2: every boundary of the document's list

BOUNDARIES = [
    *[
        ("respiratory_rate", v, s)
        for v, s in [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)]
    ],
    *[("spo2", v, s) for v, s in [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0)]],
    *[
        ("systolic_bp", v, s)
        for v, s in [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]
    ],
    *[
        ("pulse", v, s)
        for v, s in [
            (40, 3),
            (41, 1),
            (50, 1),
            (51, 0),
            (90, 0),
            (91, 1),
            (110, 1),
            (111, 2),
            (130, 2),
            (131, 3),
        ]
    ],
    *[
        ("temperature", v, s)
        for v, s in [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)]
    ],
    *[("consciousness", v, s) for v, s in [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)]],
    *[("on_oxygen", v, s) for v, s in [(False, 0), (True, 2)]],
]


@pytest.mark.parametrize(("name", "value", "expected"), BOUNDARIES)
def test_news2_boundaries(name: str, value: object, expected: int) -> None:
    assert subscore(name, value) == expected


SCALE_2_ON_AIR = [
    (83, 3),
    (84, 2),
    (85, 2),
    (86, 1),
    (87, 1),
    (88, 0),
    (92, 0),
    (93, 0),
    (94, 0),
    (96, 0),
    (97, 0),
]
SCALE_2_ON_OXYGEN = [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 1), (94, 1), (95, 2)]
SCALE_2_ON_OXYGEN += [(96, 2), (97, 3), (100, 3)]


@pytest.mark.parametrize(("spo2", "expected"), SCALE_2_ON_AIR)
def test_news2_scale_2_on_air(spo2: int, expected: int) -> None:
    result = news2(vitals(spo2=spo2, spo2_scale=2, on_oxygen=False))
    assert result.subscores["spo2"] == expected
    assert result.subscores["on_oxygen"] == 0


@pytest.mark.parametrize(("spo2", "expected"), SCALE_2_ON_OXYGEN)
def test_news2_scale_2_on_oxygen(spo2: int, expected: int) -> None:
    result = news2(vitals(spo2=spo2, spo2_scale=2, on_oxygen=True))
    assert result.subscores["spo2"] == expected
    assert result.subscores["on_oxygen"] == 2  # oxygen's 2 is added to the SpO2 sub-score


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("respiratory_rate", 20.5, 2),  # -> 21
        ("respiratory_rate", 20.4, 0),
        ("respiratory_rate", 8.5, 1),  # -> 9
        ("spo2", 95.5, 0),  # -> 96
        ("spo2", 91.49, 3),
        ("systolic_bp", 110.5, 0),  # -> 111
        ("systolic_bp", 219.5, 3),  # -> 220
        ("pulse", 90.5, 1),  # -> 91
        ("pulse", 90.4, 0),
        ("temperature", 38.05, 1),  # -> 38.1
        ("temperature", 38.04, 0),
        ("temperature", 35.05, 1),  # -> 35.1
        ("temperature", 39.05, 2),  # -> 39.1
    ],
)
def test_news2_rounds_half_up_before_banding(name: str, value: float, expected: int) -> None:
    assert subscore(name, value) == expected


# An independent transcription of RCP Chart 1 as inclusive ranges, checked over every value.
CHART = {
    "respiratory_rate": [(1, 8, 3), (9, 11, 1), (12, 20, 0), (21, 24, 2), (25, 150, 3)],
    "spo2": [(1, 91, 3), (92, 93, 2), (94, 95, 1), (96, 100, 0)],
    "systolic_bp": [(1, 90, 3), (91, 100, 2), (101, 110, 1), (111, 219, 0), (220, 300, 3)],
    "pulse": [(1, 40, 3), (41, 50, 1), (51, 90, 0), (91, 110, 1), (111, 130, 2), (131, 300, 3)],
    "temperature": [(250, 350, 3), (351, 360, 1), (361, 380, 0), (381, 390, 1), (391, 450, 2)],  # tenths
}


@pytest.mark.parametrize("name", sorted(CHART))
def test_news2_matches_the_chart_for_every_value(name: str) -> None:
    for low, high, expected in CHART[name]:
        for step in range(low, high + 1):
            value = step / 10 if name == "temperature" else step
            assert subscore(name, value) == expected, (name, value)


def test_news2_scale_2_matches_the_chart_for_every_value() -> None:
    on_air = [(1, 83, 3), (84, 85, 2), (86, 87, 1), (88, 100, 0)]
    on_oxygen = [(1, 83, 3), (84, 85, 2), (86, 87, 1), (88, 92, 0), (93, 94, 1), (95, 96, 2), (97, 100, 3)]
    for oxygen, table in ((False, on_air), (True, on_oxygen)):
        for low, high, expected in table:
            for spo2 in range(low, high + 1):
                assert subscore("spo2", spo2, spo2_scale=2, on_oxygen=oxygen) == expected, (oxygen, spo2)


# --------------------------------------------------------------------------------------------------
# NEWS2: bands, responses, partial scores, JSON


@pytest.mark.parametrize(
    ("total", "red", "band"),
    [
        (0, False, RiskBand.LOW),
        (1, False, RiskBand.LOW),
        (4, False, RiskBand.LOW),
        (3, True, RiskBand.LOW_MEDIUM),
        (4, True, RiskBand.LOW_MEDIUM),
        (5, False, RiskBand.MEDIUM),
        (5, True, RiskBand.MEDIUM),
        (6, True, RiskBand.MEDIUM),
        (7, False, RiskBand.HIGH),
        (7, True, RiskBand.HIGH),
        (20, True, RiskBand.HIGH),
    ],
)
def test_news2_band(total: int, red: bool, band: RiskBand) -> None:
    assert news2_band(total, red) is band


def test_news2_responses_have_english_keys_and_chinese_text() -> None:
    seen = set()
    for total, red in [(0, False), (2, False), (3, True), (5, False), (7, False)]:
        response = news2_response(total, red)
        seen.add(response.key)
        assert response.response
        assert response.frequency
        assert any("\u4e00" <= char <= "\u9fff" for char in response.response_zh)
        assert any("\u4e00" <= char <= "\u9fff" for char in response.frequency_zh)
    assert seen == {
        "routine",
        "ward-assessment",
        "urgent-ward-review",
        "urgent-response",
        "emergency-response",
    }
    assert news2_response(0, False).reobservation_interval == timedelta(hours=12)
    assert news2_response(4, False).reobservation_interval == timedelta(hours=4)
    assert news2_response(3, True).reobservation_interval == timedelta(hours=1)


def test_news2_without_consciousness_or_oxygen_is_partial() -> None:
    result = news2(VitalSet(respiratory_rate=16, spo2=97, systolic_bp=120, pulse=70, temperature=37.0))
    assert result.partial
    assert result.missing == ("on_oxygen", "consciousness")
    assert result.subscores["consciousness"] is None
    assert result.total == 0


def test_news2_of_nothing_reports_everything_missing() -> None:
    result = news2(VitalSet())
    assert result.total == 0
    assert result.missing == NEWS2_PARAMETERS
    assert result.spo2_scale == 1


def test_news2_scale_2_with_unknown_oxygen_scores_high_spo2_as_air_and_says_so() -> None:
    result = news2(VitalSet(spo2=97, spo2_scale=2))
    assert result.subscores["spo2"] == 0
    assert "on_oxygen" in result.missing
    assert result.spo2_scale == 2


def test_news2_to_json() -> None:
    result = news2(vitals(respiratory_rate=25, consciousness=None))
    data = json.loads(json.dumps(result.to_json(), ensure_ascii=False))
    assert data["total"] == 3
    assert data["band"] == "low-medium"
    assert data["subscores"] == {
        "respiratory_rate": 3,
        "spo2": 0,
        "on_oxygen": 0,
        "systolic_bp": 0,
        "pulse": 0,
        "consciousness": None,
        "temperature": 0,
    }
    assert data["partial"] is True
    assert data["missing"] == ["consciousness"]
    assert data["frequency"] == "1-hourly"
    assert data["response"].startswith("Score of 3")
    assert data["red_score"] is True
    assert data["spo2_scale"] == 1
    assert "责任护士" in data["response_zh"]


def test_news2_from_mapping_scores_like_news2() -> None:
    payload = {
        "respiratory_rate": 21,
        "spo2": 95,
        "spo2_scale": 1,
        "on_oxygen": False,
        "systolic_bp": 110,
        "pulse": 91,
        "consciousness": "a",
        "temperature": 38.1,
    }
    result = news2_from_mapping(payload)
    assert result.total == 6
    assert result.band is RiskBand.MEDIUM
    assert news2_from_mapping({"pulse": 70, "spo2": None}).missing == (
        "respiratory_rate",
        "spo2",
        "on_oxygen",
        "systolic_bp",
        "consciousness",
        "temperature",
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"heart_rate": 70}, "unknown key.*heart_rate"),
        ({"pulse": "70"}, "pulse must be a number"),
        ({"pulse": True}, "pulse must be a number"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"spo2_scale": 3}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": "2"}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": True}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": 2.0}, "spo2_scale must be 1 or 2"),
        ({"on_oxygen": "yes"}, "on_oxygen must be true or false"),
        ({"on_oxygen": 1}, "on_oxygen must be true or false"),
        ({"consciousness": "X"}, "consciousness must be one of A, C, V, P, U"),
        ({"consciousness": 3}, "consciousness must be one of"),
        ({"pulse": 0}, "pulse=0.0 is sensor off"),
        ({"spo2": 8388607}, "spo2=.* is sensor off"),
        ({"spo2": 101}, "spo2=101.0 is implausible"),
        ({"temperature": 50}, "temperature=50.0 is implausible"),
    ],
)
def test_news2_from_mapping_rejects_bad_input(payload: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        news2_from_mapping(payload)


def test_news2_from_mapping_needs_an_object() -> None:
    with pytest.raises(ValueError, match="expected a JSON object"):
        news2_from_mapping([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# NEWS2 properties

vital_sets = st.builds(
    VitalSet,
    respiratory_rate=st.none() | st.floats(1, 150),
    spo2=st.none() | st.integers(1, 100),
    spo2_scale=st.sampled_from([None, 1, 2]),
    on_oxygen=st.none() | st.booleans(),
    systolic_bp=st.none() | st.floats(1, 300),
    pulse=st.none() | st.integers(1, 300) | st.floats(1, 300),
    consciousness=st.none() | st.sampled_from(["A", "C", "V", "P", "U"]),
    temperature=st.none() | st.floats(25, 45),
)


@given(vital_sets)
def test_news2_total_is_the_sum_of_subscores_within_0_to_20(vital_set: VitalSet) -> None:
    result = news2(vital_set)
    scores = [s for s in result.subscores.values() if s is not None]
    assert result.total == sum(scores)
    assert 0 <= result.total <= 20
    assert set(result.subscores) == set(NEWS2_PARAMETERS)
    assert result.red_score == (3 in scores)
    assert result.band is news2_band(result.total, result.red_score)
    assert result.partial == bool(result.missing)
    assert set(result.missing) == {name for name, s in result.subscores.items() if s is None}
    assert json.loads(json.dumps(result.to_json()))["total"] == result.total


@given(vital_sets)
def test_the_monitoring_stream_gets_exactly_the_three_scores(vital_set: VitalSet) -> None:
    scored = early_warning_scores(vital_set)
    assert scored == (news2(vital_set), mews(vital_set), qsofa(vital_set))
    assert early_warning_scores(VitalSet(**_fields(vital_set))) is scored  # an equal set shares the result


def _fields(vital_set: VitalSet) -> dict[str, object]:
    names = ("respiratory_rate", "spo2", "spo2_scale", "on_oxygen", "systolic_bp", "pulse")
    return {name: getattr(vital_set, name) for name in (*names, "consciousness", "temperature")}


# The middle of each numeric parameter's 0 band: further from it (on either side) is further from normal.
NORMAL_CENTRE = {"respiratory_rate": 16, "systolic_bp": 165, "pulse": 70, "temperature": 37.0}
RANGES = {"respiratory_rate": (1, 150), "systolic_bp": (1, 300), "pulse": (1, 300), "temperature": (25, 45)}


@given(st.sampled_from(sorted(NORMAL_CENTRE)), st.data())
def test_news2_moving_away_from_normal_never_lowers_a_subscore(name: str, data: st.DataObject) -> None:
    low, high = RANGES[name]
    centre = NORMAL_CENTRE[name]
    below = data.draw(st.booleans())
    side = st.floats(low, centre) if below else st.floats(centre, high)
    a, b = sorted([data.draw(side), data.draw(side)], key=lambda v: abs(v - centre))
    assert subscore(name, b) >= subscore(name, a)  # type: ignore[operator]


@given(st.integers(1, 100), st.integers(1, 100), st.sampled_from([1, 2]), st.booleans())
def test_news2_spo2_further_from_target_never_lowers_its_subscore(
    a: int, b: int, scale: int, oxygen: bool
) -> None:
    # Scale 2 on oxygen scores too much oxygen as well: its normal band 88-92 % is centred on 90 %.
    centre = 90 if scale == 2 and oxygen else 100
    near, far = sorted([a, b], key=lambda v: abs(v - centre))
    assume((near - centre) * (far - centre) >= 0)  # same side of the centre
    context = {"spo2_scale": scale, "on_oxygen": oxygen}
    assert subscore("spo2", far, **context) >= subscore("spo2", near, **context)  # type: ignore[operator]


@given(st.sampled_from(["A", "C", "V", "P", "U"]), st.booleans())
def test_news2_altered_consciousness_and_oxygen_never_score_less_than_normal(
    acvpu: str, oxygen: bool
) -> None:
    assert subscore("consciousness", acvpu) >= subscore("consciousness", "A")  # type: ignore[operator]
    assert subscore("on_oxygen", oxygen) >= subscore("on_oxygen", False)  # type: ignore[operator]


# --------------------------------------------------------------------------------------------------
# MEWS and qSOFA


def test_mews_document_vector() -> None:
    result = mews(
        VitalSet(systolic_bp=85, pulse=115, respiratory_rate=22, temperature=38.6, consciousness="V")
    )
    assert dict(result.subscores) == {
        "systolic_bp": 1,
        "pulse": 2,
        "respiratory_rate": 2,
        "temperature": 2,
        "consciousness": 1,
    }
    assert result.total == 8
    assert not result.partial


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        *[
            ("systolic_bp", v, s)
            for v, s in [(70, 3), (71, 2), (80, 2), (81, 1), (100, 1), (101, 0), (199, 0)]
        ],
        ("systolic_bp", 200, 2),
        *[
            ("pulse", v, s)
            for v, s in [(40, 2), (41, 1), (50, 1), (51, 0), (100, 0), (101, 1), (110, 1), (111, 2)]
        ],
        *[("pulse", v, s) for v, s in [(129, 2), (130, 3)]],
        *[
            ("respiratory_rate", v, s)
            for v, s in [(8, 2), (9, 0), (14, 0), (15, 1), (20, 1), (21, 2), (29, 2), (30, 3)]
        ],
        *[("temperature", v, s) for v, s in [(34.9, 2), (35.0, 0), (38.4, 0), (38.5, 2), (38.45, 2)]],
        *[("consciousness", v, s) for v, s in [("A", 0), ("C", 1), ("V", 1), ("P", 2), ("U", 3)]],
    ],
)
def test_mews_boundaries(name: str, value: object, expected: int) -> None:
    assert mews(VitalSet(**{name: value})).subscores[name] == expected  # type: ignore[arg-type]


@given(vital_sets)
def test_mews_total_is_the_sum_of_subscores_within_0_to_14(vital_set: VitalSet) -> None:
    result = mews(vital_set)
    assert result.total == sum(s for s in result.subscores.values() if s is not None)
    assert 0 <= result.total <= 14
    assert result.partial == any(s is None for s in result.subscores.values())


def test_qsofa_document_vectors() -> None:
    positive = qsofa(VitalSet(respiratory_rate=22, systolic_bp=100), gcs=14)
    assert positive.total == 3
    assert positive.positive
    negative = qsofa(VitalSet(respiratory_rate=21, systolic_bp=101), gcs=15)
    assert negative.total == 0
    assert not negative.positive
    assert not negative.partial


def test_qsofa_mentation_from_acvpu_and_rounding() -> None:
    assert qsofa(VitalSet(respiratory_rate=21.5, systolic_bp=120, consciousness="C")).total == 2
    assert qsofa(VitalSet(respiratory_rate=16, systolic_bp=100.4, consciousness="A")).total == 1
    assert qsofa(VitalSet(consciousness="A"), gcs=14).criteria["mentation"] is True
    unknown = qsofa(VitalSet(respiratory_rate=30, systolic_bp=90))
    assert unknown.criteria["mentation"] is None
    assert unknown.missing == ("mentation",)
    assert unknown.positive


@pytest.mark.parametrize("gcs", [2, 16, True, 14.0])
def test_qsofa_rejects_an_invalid_gcs(gcs: object) -> None:
    with pytest.raises(ValueError, match="gcs"):
        qsofa(VitalSet(), gcs=gcs)  # type: ignore[arg-type]
