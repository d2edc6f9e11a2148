"""Early-warning scores: NEWS2 (RCP 2017, Chart 1), MEWS (Subbe 2001) and qSOFA (Sepsis-3).

Scores are computed from a validated :class:`~tianfu.monitoring.vitals.VitalSet`, after half-up
rounding (:func:`~tianfu.monitoring.vitals.round_for_banding`). A missing parameter contributes
nothing but is reported, and the result is marked partial: a NEWS2 without consciousness or oxygen
information looks reassuring only because something was not asked (docs/monitoring.md §7).

Pure: standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tianfu.monitoring.vitals import CONSCIOUSNESS_LEVELS, Parameter, VitalSet, round_for_banding

#: NEWS2 sub-score keys, in chart order. ``on_oxygen`` is the "Air or oxygen?" row.
NEWS2_PARAMETERS: tuple[str, ...] = (
    "respiratory_rate",
    "spo2",
    "on_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)
MEWS_PARAMETERS: tuple[str, ...] = (
    "systolic_bp",
    "pulse",
    "respiratory_rate",
    "temperature",
    "consciousness",
)
QSOFA_CRITERIA: tuple[str, ...] = ("respiratory_rate", "systolic_bp", "mentation")

#: Keys :func:`news2_from_mapping` accepts.
NEWS2_INPUT_KEYS: tuple[str, ...] = (
    "respiratory_rate",
    "spo2",
    "spo2_scale",
    "on_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


class RiskBand(StrEnum):
    """NEWS2 clinical risk (RCP Chart 2)."""

    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class ClinicalResponse:
    """What the NEWS2 band asks of the ward (RCP Chart 4, abridged), in English and Chinese.

    ``frequency`` is a stable English key; ``reobservation_interval`` drives re-observation reminders
    (the stricter end of a range: 4 h for "4-6-hourly"; ``None`` = continuous monitoring).
    """

    key: str
    frequency: str
    frequency_zh: str
    reobservation_interval: timedelta | None
    response: str
    response_zh: str


_RESPONSES: Mapping[str, ClinicalResponse] = MappingProxyType(
    {
        "routine": ClinicalResponse(
            "routine",
            "12-hourly",
            "至少每12小时监测一次",
            timedelta(hours=12),
            "Continue routine NEWS monitoring.",
            "继续常规NEWS监测。",
        ),
        "ward-assessment": ClinicalResponse(
            "ward-assessment",
            "4-6-hourly",
            "至少每4~6小时监测一次",
            timedelta(hours=4),
            "Inform the registered nurse, who assesses the patient and decides whether monitoring "
            "frequency must increase or care must be escalated.",
            "通知责任护士评估患者，决定是否增加监测频次或升级处理。",
        ),
        "urgent-ward-review": ClinicalResponse(
            "urgent-ward-review",
            "1-hourly",
            "至少每小时监测一次",
            timedelta(hours=1),
            "Score of 3 in one parameter: the registered nurse informs the medical team caring for the "
            "patient, who review and decide whether to escalate care.",
            "单项评分为3分：责任护士通知主管医疗团队，由其评估并决定是否升级处理。",
        ),
        "urgent-response": ClinicalResponse(
            "urgent-response",
            "1-hourly",
            "至少每小时监测一次",
            timedelta(hours=1),
            "Urgent response threshold: the registered nurse immediately informs the medical team; urgent "
            "assessment by a clinician or team competent in acute illness; care in an environment with "
            "monitoring facilities.",
            "紧急响应阈值：责任护士立即通知主管医疗团队；由具备急危重症处置能力的医师或团队紧急评估；"
            "在具备监护条件的环境中治疗。",
        ),
        "emergency-response": ClinicalResponse(
            "emergency-response",
            "continuous",
            "持续监测生命体征",
            None,
            "Emergency response threshold: immediately inform the medical team (at least specialist "
            "registrar level); emergency assessment by a critical-care team including advanced airway "
            "skills; consider transfer to level 2/3 care (HDU/ICU).",
            "紧急抢救阈值：立即通知主管医疗团队（至少高年资住院医师/主治医师级别）；由具备高级气道管理能力的"
            "重症医学团队紧急评估；考虑转入HDU/ICU（2/3级监护）。",
        ),
    }
)


def news2_band(total: int, red_score: bool) -> RiskBand:
    """Clinical risk from the aggregate and the single-parameter-3 flag.

    ≥7 high; 5–6 medium; otherwise a single 3 makes it low-medium; otherwise low (0 and 1–4).
    """
    if total >= 7:
        return RiskBand.HIGH
    if total >= 5:
        return RiskBand.MEDIUM
    if red_score:
        return RiskBand.LOW_MEDIUM
    return RiskBand.LOW


def news2_response(total: int, red_score: bool) -> ClinicalResponse:
    """Monitoring frequency and clinical response for a NEWS2 aggregate (RCP Charts 2 and 4)."""
    band = news2_band(total, red_score)
    if band is RiskBand.HIGH:
        return _RESPONSES["emergency-response"]
    if band is RiskBand.MEDIUM:
        return _RESPONSES["urgent-response"]
    if band is RiskBand.LOW_MEDIUM:
        return _RESPONSES["urgent-ward-review"]
    return _RESPONSES["routine" if total == 0 else "ward-assessment"]


@dataclass(frozen=True)
class News2Result:
    """A NEWS2 score. ``subscores`` has every chart row; ``None`` = parameter missing (scored 0)."""

    total: int
    subscores: Mapping[str, int | None]
    red_score: bool
    band: RiskBand
    spo2_scale: int
    missing: tuple[str, ...]
    response: ClinicalResponse

    @property
    def partial(self) -> bool:
        """True when any parameter was missing: the total may understate the risk."""
        return bool(self.missing)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict for the CLI and the API (English keys; ``response_zh`` for Chinese pages)."""
        return {
            "total": self.total,
            "band": self.band.value,
            "subscores": dict(self.subscores),
            "partial": self.partial,
            "missing": list(self.missing),
            "frequency": self.response.frequency,
            "response": self.response.response,
            "response_zh": self.response.response_zh,
            "red_score": self.red_score,
            "spo2_scale": self.spo2_scale,
        }


def _rounded(vitals: VitalSet, parameter: Parameter) -> float | None:
    value = vitals.value(parameter)
    if value is None:
        return None
    assert isinstance(value, int | float)
    return round_for_banding(parameter, value)


def _banded(parameter: Parameter, value: float | None) -> float | None:
    """:func:`_rounded` for a value already read from the set."""
    if value is None:
        return None
    assert isinstance(value, int | float)
    return round_for_banding(parameter, value)


def _news2_respiratory_rate(rate: float) -> int:
    if rate <= 8:
        return 3
    if rate <= 11:
        return 1
    if rate <= 20:
        return 0
    if rate <= 24:
        return 2
    return 3


def _news2_spo2(spo2: float, scale: int, on_oxygen: bool | None) -> int:
    if scale == 1:
        if spo2 <= 91:
            return 3
        if spo2 <= 93:
            return 2
        if spo2 <= 95:
            return 1
        return 0
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    if spo2 <= 92 or not on_oxygen:  # 88-92 on air or oxygen, and >=93 on air (or O2 unknown), score 0
        return 0
    if spo2 <= 94:
        return 1
    if spo2 <= 96:
        return 2
    return 3


def _news2_systolic_bp(systolic: float) -> int:
    if systolic <= 90:
        return 3
    if systolic <= 100:
        return 2
    if systolic <= 110:
        return 1
    if systolic <= 219:
        return 0
    return 3


def _news2_pulse(pulse: float) -> int:
    if pulse <= 40:
        return 3
    if pulse <= 50:
        return 1
    if pulse <= 90:
        return 0
    if pulse <= 110:
        return 1
    if pulse <= 130:
        return 2
    return 3


def _news2_temperature(temperature: float) -> int:
    if temperature <= 35.0:
        return 3
    if temperature <= 36.0:
        return 1
    if temperature <= 38.0:
        return 0
    if temperature <= 39.0:
        return 1
    return 2


def news2(vitals: VitalSet) -> News2Result:
    """NEWS2 exactly per RCP Chart 1.

    No Scale 2 order (``spo2_scale`` None) scores SpO2 on Scale 1, the chart's default; the scale used
    is in the result so it can be displayed. On Scale 2 with the oxygen status unknown, SpO2 ≥93 % is
    scored as on air (0) and ``on_oxygen`` is listed as missing.
    """
    scale = vitals.spo2_scale or 1
    on_oxygen = vitals.on_oxygen
    consciousness = vitals.consciousness
    rate = _banded(Parameter.RESPIRATORY_RATE, vitals.respiratory_rate)
    spo2 = _banded(Parameter.SPO2, vitals.spo2)
    systolic = _banded(Parameter.SYSTOLIC_BP, vitals.systolic_bp)
    pulse = _banded(Parameter.PULSE, vitals.pulse)
    temperature = _banded(Parameter.TEMPERATURE, vitals.temperature)
    subscores: dict[str, int | None] = {
        "respiratory_rate": None if rate is None else _news2_respiratory_rate(rate),
        "spo2": None if spo2 is None else _news2_spo2(spo2, scale, on_oxygen),
        "on_oxygen": None if on_oxygen is None else (2 if on_oxygen else 0),
        "systolic_bp": None if systolic is None else _news2_systolic_bp(systolic),
        "pulse": None if pulse is None else _news2_pulse(pulse),
        "consciousness": None if consciousness is None else (0 if consciousness == "A" else 3),
        "temperature": None if temperature is None else _news2_temperature(temperature),
    }
    total = 0
    red_score = False
    missing = []
    for name, score in subscores.items():
        if score is None:
            missing.append(name)
        else:
            total += score
            if score == 3:
                red_score = True
    return News2Result(
        total=total,
        subscores=MappingProxyType(subscores),
        red_score=red_score,
        band=news2_band(total, red_score),
        spo2_scale=scale,
        missing=tuple(missing),
        response=news2_response(total, red_score),
    )


def news2_from_mapping(data: Mapping[str, Any]) -> News2Result:
    """NEWS2 from a JSON object with the keys of :data:`NEWS2_INPUT_KEYS` (backs the CLI and the API).

    Absent keys and ``null`` are missing parameters. Raises ``ValueError`` with a message naming the key
    for unknown keys, wrong types (numbers must be numbers, not strings or booleans; ``on_oxygen`` a
    boolean; ``spo2_scale`` the integer 1 or 2; ``consciousness`` one of A, C, V, P, U, any case) and
    values that are sensor-off sentinels or physiologically implausible.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in NEWS2_INPUT_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s): {', '.join(unknown)}; expected some of: {', '.join(NEWS2_INPUT_KEYS)}"
        )
    numbers: dict[str, float | None] = {}
    for key in ("respiratory_rate", "spo2", "systolic_bp", "pulse", "temperature"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        numbers[key] = None if value is None else float(value)
    scale = data.get("spo2_scale")
    if scale is not None and (isinstance(scale, bool) or scale not in (1, 2) or not isinstance(scale, int)):
        raise ValueError(f"spo2_scale must be 1 or 2, got {scale!r}")
    on_oxygen = data.get("on_oxygen")
    if on_oxygen is not None and not isinstance(on_oxygen, bool):
        raise ValueError(f"on_oxygen must be true or false, got {on_oxygen!r}")
    consciousness = data.get("consciousness")
    if consciousness is not None:
        if not isinstance(consciousness, str) or consciousness.strip().upper() not in CONSCIOUSNESS_LEVELS:
            raise ValueError(
                f"consciousness must be one of {', '.join(CONSCIOUSNESS_LEVELS)}, got {consciousness!r}"
            )
        consciousness = consciousness.strip().upper()
    return news2(
        VitalSet(
            respiratory_rate=numbers["respiratory_rate"],
            spo2=numbers["spo2"],
            spo2_scale=scale,
            on_oxygen=on_oxygen,
            systolic_bp=numbers["systolic_bp"],
            pulse=numbers["pulse"],
            consciousness=consciousness,
            temperature=numbers["temperature"],
        )
    )


@dataclass(frozen=True)
class MewsResult:
    """A MEWS score (Subbe 2001). ``subscores`` values are ``None`` for missing parameters."""

    total: int
    subscores: Mapping[str, int | None]
    missing: tuple[str, ...]

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def _mews_systolic_bp(systolic: float) -> int:
    if systolic <= 70:
        return 3
    if systolic <= 80:
        return 2
    if systolic <= 100:
        return 1
    if systolic <= 199:
        return 0
    return 2


def _mews_pulse(pulse: float) -> int:
    if pulse <= 40:
        return 2
    if pulse <= 50:
        return 1
    if pulse <= 100:
        return 0
    if pulse <= 110:
        return 1
    if pulse <= 129:
        return 2
    return 3


def _mews_respiratory_rate(rate: float) -> int:
    if rate < 9:
        return 2
    if rate <= 14:
        return 0
    if rate <= 20:
        return 1
    if rate <= 29:
        return 2
    return 3


def _mews_temperature(temperature: float) -> int:
    if temperature < 35.0 or temperature >= 38.5:
        return 2
    return 0


#: MEWS is AVPU; new confusion ("C" of ACVPU) is scored like "V" (1), a project decision.
_MEWS_CONSCIOUSNESS: Mapping[str, int] = MappingProxyType({"A": 0, "C": 1, "V": 1, "P": 2, "U": 3})


def mews(vitals: VitalSet) -> MewsResult:
    """Modified Early Warning Score (Subbe et al., QJM 2001), 0-14; ≥5 was associated with death/ICU."""
    systolic = _rounded(vitals, Parameter.SYSTOLIC_BP)
    pulse = _rounded(vitals, Parameter.PULSE)
    rate = _rounded(vitals, Parameter.RESPIRATORY_RATE)
    temperature = _rounded(vitals, Parameter.TEMPERATURE)
    subscores: dict[str, int | None] = {
        "systolic_bp": None if systolic is None else _mews_systolic_bp(systolic),
        "pulse": None if pulse is None else _mews_pulse(pulse),
        "respiratory_rate": None if rate is None else _mews_respiratory_rate(rate),
        "temperature": None if temperature is None else _mews_temperature(temperature),
        "consciousness": None if vitals.consciousness is None else _MEWS_CONSCIOUSNESS[vitals.consciousness],
    }
    return MewsResult(
        total=sum(score for score in subscores.values() if score is not None),
        subscores=MappingProxyType(subscores),
        missing=tuple(name for name, score in subscores.items() if score is None),
    )


@dataclass(frozen=True)
class QsofaResult:
    """qSOFA: one point per criterion met; positive at ≥2. ``criteria`` values are ``None`` when unknown."""

    total: int
    criteria: Mapping[str, bool | None]
    missing: tuple[str, ...]

    @property
    def positive(self) -> bool:
        return self.total >= 2

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def qsofa(vitals: VitalSet, gcs: int | None = None) -> QsofaResult:
    """qSOFA (Sepsis-3): RR ≥22/min, SBP ≤100 mmHg, altered mentation (GCS <15 or ACVPU other than A).

    Mentation is unknown only when neither GCS nor ACVPU is given; either one showing an alteration
    counts.
    """
    if gcs is not None and (isinstance(gcs, bool) or not isinstance(gcs, int) or not 3 <= gcs <= 15):
        raise ValueError(f"gcs must be an integer from 3 to 15, got {gcs!r}")
    rate = _rounded(vitals, Parameter.RESPIRATORY_RATE)
    systolic = _rounded(vitals, Parameter.SYSTOLIC_BP)
    mentation: bool | None = None
    if gcs is not None or vitals.consciousness is not None:
        mentation = (gcs is not None and gcs < 15) or (
            vitals.consciousness is not None and vitals.consciousness != "A"
        )
    criteria: dict[str, bool | None] = {
        "respiratory_rate": None if rate is None else rate >= 22,
        "systolic_bp": None if systolic is None else systolic <= 100,
        "mentation": mentation,
    }
    return QsofaResult(
        total=sum(1 for met in criteria.values() if met),
        criteria=MappingProxyType(criteria),
        missing=tuple(name for name, met in criteria.items() if met is None),
    )


_SCORED: dict[tuple[Any, ...], tuple[News2Result, MewsResult, QsofaResult]] = {}


def early_warning_scores(vitals: VitalSet) -> tuple[News2Result, MewsResult, QsofaResult]:
    """NEWS2, MEWS and qSOFA of one set, exactly as :func:`news2`, :func:`mews` and :func:`qsofa` give
    them, for a monitor's stream: the results (immutable) are shared by every set with the same values, and
    a bed's values repeat from one second to the next."""
    key = (
        vitals.respiratory_rate,
        vitals.spo2,
        vitals.spo2_scale,
        vitals.on_oxygen,
        vitals.systolic_bp,
        vitals.pulse,
        vitals.consciousness,
        vitals.temperature,
    )
    scored = _SCORED.get(key)
    if scored is None:
        if len(_SCORED) > 65_536:
            _SCORED.clear()
        scored = _SCORED[key] = (news2(vitals), mews(vitals), qsofa(vitals))
    return scored
