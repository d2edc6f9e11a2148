"""Emergency pre-triage urgency (急诊预检分级): the Chinese four-level scale, decision support only.

Levels Ⅰ 急危 (red, immediate), Ⅱ 急重 (orange, ≤10 min), Ⅲ 急症 (yellow, ≤30 min), Ⅳ 亚急症或非急症
(green, ≤240 min) per the 2018 expert consensus (docs: ``triage.md`` §1). Every threshold, word list
and response time lives in a reviewed, versioned rules file (``rules/urgency-cn2018-v1.json``); this
module only evaluates it. The file is a draft until the ED leads sign it off (``rules/README.md``).

How a level is found (:func:`assess`):

- **Components.** Vital-sign rules (adult thresholds from the 2018 consensus and one hospital's
  implementation; SpO2, temperature, glucose, GCS and AVPU for every age), the site's MEWS bands
  (MEWS from :func:`tianfu.monitoring.scores.mews`), the pain score (TRI-06), red-flag complaints
  found in the free text and in the recognised symptom names (with a small local negation check),
  the nurse's manual rating and an optional model suggestion.
- **Most urgent wins.** The suggested level is the most urgent of all components, so no model and
  no lower rating can ever go below a rule-defined level (``triage.md`` §2, guidance 2). Nothing met
  means Ⅳ.
- **Channels.** ``nurse``: vital signs measured; ``level`` is the suggestion the nurse confirms or
  overrides elsewhere (TRI-02 records both). ``self_service`` (phone, kiosk): no vital signs can be
  measured, so the patient never gets a level (§2, guidance 3); a red flag sends them to the
  emergency triage desk (or to call 120), otherwise to the outpatient department.
- **Children.** Below ``adult_min_age_years`` (14) heart rate, blood pressure, respiratory rate and
  MEWS are *not* graded: this file has no age-specific paediatric bands (PEWS is not implemented).
  Red flags, pain, SpO2, temperature, glucose, GCS and AVPU still apply; ``requires_nurse_rating``
  is set until the nurse rates the child.

:func:`reassess` re-grades with new vital signs while the patient waits (TRI-04): it returns a new
result, never changes the old one, never lowers the level on its own, and moves the patient up one
level when the vital signs deteriorated (defined in the rules file: NEWS2 +2, a new or more urgent
vital-sign rule on a parameter measured both times, or GCS −2).

Pure: no I/O except reading the shipped rules file; stdlib + pydantic.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from enum import IntEnum
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from tianfu.monitoring.scores import mews, news2
from tianfu.monitoring.vitals import (
    CONSCIOUSNESS_LEVELS,
    Parameter,
    Validity,
    VitalSet,
    classify_measurement,
    round_for_banding,
    round_half_up,
)

__all__ = [
    "DEFAULT_RULES_FILE",
    "Caution",
    "Channel",
    "ComponentLevels",
    "Level",
    "LevelInfo",
    "Reason",
    "RulesDocument",
    "RulesError",
    "UrgencyInput",
    "UrgencyResult",
    "UrgencyRules",
    "VitalSigns",
    "assess",
    "load_rules",
    "most_urgent",
    "reassess",
]

DEFAULT_RULES_FILE = "urgency-cn2018-v1.json"

Channel = Literal["nurse", "self_service"]
Population = Literal["adult", "paediatric"]


class Level(IntEnum):
    """The four levels; a smaller number is more urgent. Names, colours and times come from the rules."""

    I = 1  # noqa: E741 - the consensus numbers its levels Ⅰ..Ⅳ
    II = 2
    III = 3
    IV = 4

    @property
    def roman(self) -> str:
        return "ⅠⅡⅢⅣ"[self.value - 1]

    def up_one(self) -> Level:
        """One level more urgent (Ⅰ stays Ⅰ): the 2011 rule for deterioration while waiting."""
        return Level(max(1, self.value - 1))


def most_urgent(levels: Iterable[Level | None]) -> Level | None:
    """The most urgent of the given levels; ``None`` when none is given."""
    present = [level for level in levels if level is not None]
    return min(present) if present else None


# ---- the rules file ------------------------------------------------------------------------------

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
LevelNumber = Annotated[int, Field(ge=1, le=4)]
RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9-]*[A-Z0-9]$")]
RuleParameter = Literal[
    "heart_rate",
    "systolic_bp",
    "spo2",
    "temperature",
    "respiratory_rate",
    "gcs",
    "consciousness",
    "glucose_mmol_l",
    "pain_score",
    "mews",
]
#: Which component of the result a rule's parameter feeds.
_COMPONENT: Mapping[str, str] = MappingProxyType(
    {"pain_score": "pain", "mews": "scores"}
    | {
        p: "vital_signs"
        for p in (
            "heart_rate",
            "systolic_bp",
            "spo2",
            "temperature",
            "respiratory_rate",
            "gcs",
            "consciousness",
            "glucose_mmol_l",
        )
    }
)

_MODEL = ConfigDict(extra="forbid", frozen=True, strict=True)


class RulesError(ValueError):
    """The rules file cannot be read or does not validate; the message says which file and which field."""


class Condition(BaseModel):
    """``parameter comparison value``; ``between`` is inclusive at both ends; ``in`` is for ACVPU letters."""

    model_config = _MODEL

    parameter: RuleParameter
    comparison: Literal["<", "<=", ">", ">=", "between", "in"]
    value: float | None = None
    values: tuple[float, float] | tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        categorical = self.parameter == "consciousness"
        if self.comparison == "in":
            if not categorical:
                raise ValueError(f"'in' is only for consciousness, not {self.parameter}")
            letters = self.values or ()
            if not letters or any(not isinstance(x, str) or x not in CONSCIOUSNESS_LEVELS for x in letters):
                raise ValueError(f"'in' needs a non-empty list of ACVPU letters, got {self.values!r}")
            if self.value is not None:
                raise ValueError("'in' takes 'values', not 'value'")
            return self
        if categorical:
            raise ValueError(f"consciousness needs the 'in' comparison, not {self.comparison!r}")
        if self.comparison == "between":
            bounds = self.values
            numbers = [float(b) for b in bounds or () if isinstance(b, int | float)]
            if bounds is None or len(numbers) != 2 or len(bounds) != 2 or not numbers[0] <= numbers[1]:
                raise ValueError(f"'between' needs 'values': [low, high] with low <= high, got {bounds!r}")
            if self.value is not None:
                raise ValueError("'between' takes 'values', not 'value'")
            return self
        if self.value is None or self.values is not None:
            raise ValueError(f"{self.comparison!r} needs a numeric 'value' and no 'values'")
        if not math.isfinite(self.value):
            raise ValueError(f"'value' must be finite, got {self.value!r}")
        return self

    def bounds(self) -> tuple[float, float]:
        """The inclusive ``between`` range."""
        low, high = (float(b) for b in self.values or () if isinstance(b, int | float))
        return low, high

    def holds(self, observed: float | str) -> bool:
        """Whether an (already rounded) observation meets the condition."""
        if self.comparison == "in":
            return observed in (self.values or ())
        assert isinstance(observed, int | float)
        if self.comparison == "between":
            low, high = self.bounds()
            return low <= observed <= high
        threshold = self.value
        assert threshold is not None
        if self.comparison == "<":
            return observed < threshold
        if self.comparison == "<=":
            return observed <= threshold
        if self.comparison == ">":
            return observed > threshold
        return observed >= threshold

    def describe(self) -> str:
        if self.comparison == "between":
            low, high = self.bounds()
            return f"{self.parameter} {low:g}–{high:g}"
        if self.comparison == "in":
            return f"{self.parameter} in {','.join(str(v) for v in self.values or ())}"
        return f"{self.parameter} {self.comparison} {self.value:g}"


class Rule(BaseModel):
    """One objective criterion (vital sign, MEWS band or pain score) and the level it implies."""

    model_config = _MODEL

    id: RuleId
    level: LevelNumber
    applies_to: tuple[Population, ...] = Field(min_length=1)
    condition: Condition
    text_zh: NonBlank
    text_en: NonBlank
    source: NonBlank
    verified: bool
    note: str = ""

    @model_validator(mode="after")
    def _unique_populations(self) -> Rule:
        if len(set(self.applies_to)) != len(self.applies_to):
            raise ValueError(f"applies_to repeats a population: {self.applies_to}")
        return self


Term = Annotated[str, StringConstraints(min_length=1)]


class RedFlag(BaseModel):
    """A red-flag complaint: surface forms (``…`` = a short gap), co-occurring groups, optional gates.

    Fires on a non-negated term in the text or a term within a recognised symptom name, or when every
    ``all_of`` group has one, or when ``vital`` holds; ``max_age_years`` then restricts it to patients
    recorded as younger. ``exclude`` phrases suppress a match that lies inside them.
    """

    model_config = _MODEL

    id: RuleId
    level: LevelNumber
    call_120: bool = False
    terms_zh: tuple[Term, ...] = ()
    terms_en: tuple[Term, ...] = ()
    all_of: tuple[tuple[Term, ...], ...] = ()
    exclude: tuple[Term, ...] = ()
    vital: Condition | None = None
    max_age_years: Annotated[float, Field(gt=0, le=130)] | None = None
    text_zh: NonBlank
    text_en: NonBlank
    source: NonBlank
    verified: bool
    note: str = ""

    @model_validator(mode="after")
    def _triggers(self) -> RedFlag:
        if not (self.terms_zh or self.terms_en or self.all_of or self.vital):
            raise ValueError(f"red flag {self.id} has no trigger (terms_zh, terms_en, all_of or vital)")
        if self.all_of and (len(self.all_of) < 2 or any(not group for group in self.all_of)):
            raise ValueError(f"red flag {self.id}: all_of needs at least two non-empty groups")
        for term in (*self.terms_zh, *self.terms_en, *(t for g in self.all_of for t in g), *self.exclude):
            if not term.strip() or term.startswith(_GAP) or term.endswith(_GAP):
                raise ValueError(f"red flag {self.id}: bad term {term!r} (blank, or a gap at an end)")
        return self


class LevelInfo(BaseModel):
    """Name, colour, zone and response time of one level (TRI-01, TRI-03: configurable per hospital)."""

    model_config = _MODEL

    level: LevelNumber
    roman: NonBlank
    name_zh: NonBlank
    name_en: NonBlank
    colour: NonBlank
    colour_zh: NonBlank
    colour_hex: Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
    zone_zh: NonBlank
    zone_en: NonBlank
    response_minutes: Annotated[int, Field(ge=0, le=24 * 60)]
    response_verified: bool
    colour_verified: bool
    source: NonBlank


class SignOff(BaseModel):
    model_config = _MODEL

    signed_by: str | None = None
    role: str | None = None
    signed_on: date | None = None
    checked_against: str | None = None


class NegationRules(BaseModel):
    """The local negation check (see :func:`_negated`)."""

    model_config = _MODEL

    note: str = ""
    clause_breaks: tuple[Term, ...] = Field(min_length=1)
    cues_zh: tuple[Term, ...]
    pseudo_zh: tuple[Term, ...]
    terminators_zh: tuple[Term, ...]
    window_chars_zh: Annotated[int, Field(ge=0, le=40)]
    cues_en: tuple[Term, ...]
    pseudo_en: tuple[Term, ...]
    terminators_en: tuple[Term, ...]
    window_words_en: Annotated[int, Field(ge=0, le=20)]


class DeteriorationRules(BaseModel):
    model_config = _MODEL

    news2_rise: Annotated[int, Field(ge=1, le=20)]
    gcs_fall: Annotated[int, Field(ge=1, le=12)]
    source: NonBlank
    verified: bool
    note: str = ""


class SelfServiceAdvice(BaseModel):
    model_config = _MODEL

    call_120_zh: NonBlank
    call_120_en: NonBlank
    emergency_zh: NonBlank
    emergency_en: NonBlank
    outpatient_zh: NonBlank
    outpatient_en: NonBlank


class RulesDocument(BaseModel):
    """The whole rules file, validated strictly: unknown keys, wrong types and gaps are errors."""

    model_config = _MODEL

    format: Literal["tianfu.triage.urgency-rules/1"]
    version: NonBlank
    effective_date: date
    status: NonBlank
    sign_off: SignOff
    sources: dict[str, NonBlank]
    adult_min_age_years: Annotated[float, Field(gt=0, le=25)]
    adult_min_age_note: str = ""
    levels: tuple[LevelInfo, ...]
    rules: tuple[Rule, ...] = Field(min_length=1)
    red_flags: tuple[RedFlag, ...] = Field(min_length=1)
    negation: NegationRules
    deterioration: DeteriorationRules
    self_service: SelfServiceAdvice

    @model_validator(mode="after")
    def _consistent(self) -> RulesDocument:
        if [info.level for info in self.levels] != [1, 2, 3, 4]:
            raise ValueError("levels must list levels 1, 2, 3, 4 in that order")
        minutes = [info.response_minutes for info in self.levels]
        if minutes != sorted(minutes):
            raise ValueError(f"response_minutes must not decrease from Ⅰ to Ⅳ, got {minutes}")
        seen: set[str] = set()
        for rule_id in [r.id for r in self.rules] + [f.id for f in self.red_flags]:
            if rule_id in seen:
                raise ValueError(f"duplicate rule id {rule_id}")
            seen.add(rule_id)
        # An unsigned file must say it is a draft, so nobody mistakes it for the signed-off version.
        if self.sign_off.signed_by is None and "draft" not in self.status.lower():
            raise ValueError("status must say 'draft' while sign_off.signed_by is empty")
        return self


# ---- text matching -------------------------------------------------------------------------------

_GAP = "…"  # in a term: up to 3 characters (Chinese) or ~20 characters (English) of anything
_ZH_GAP = r"([^,.;:!?\n。、]{0,3}?)"
_EN_GAP = r"([^,.;:!?\n。]{0,20}?)"
_CONTRACTIONS = (
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
)


def _normalise(text: str) -> str:
    """NFKC (full-width → ASCII), lower case, straight quotes, "can't" → "can not" (text and terms alike)."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    for pattern, replacement in _CONTRACTIONS:
        folded = pattern.sub(replacement, folded)
    return folded


def _is_ascii(text: str) -> bool:
    return all(ord(ch) < 128 for ch in text)


@dataclass(frozen=True)
class _Term:
    surface: str
    pattern: re.Pattern[str]


def _compile_term(surface: str) -> _Term:
    parts = [_normalise(part.strip()) for part in surface.split(_GAP)]
    ascii_term = _is_ascii("".join(parts))
    gap = _EN_GAP if ascii_term else _ZH_GAP
    body = gap.join(re.escape(part) for part in parts)
    if ascii_term:  # whole words: "stroke" must not fire inside "heatstroke"
        body = rf"(?<![a-z0-9]){body}(?![a-z0-9])"
    return _Term(surface, re.compile(body))


@dataclass(frozen=True)
class _Negation:
    breaks: re.Pattern[str]
    zh_cues: tuple[str, ...]
    zh_pseudo: tuple[str, ...]
    zh_terminators: tuple[str, ...]
    zh_window: int
    en_cues: re.Pattern[str] | None
    en_pseudo: tuple[re.Pattern[str], ...]
    en_terminators: frozenset[str]
    en_window: int


def _compile_negation(rules: NegationRules) -> _Negation:
    def words(phrases: Sequence[str]) -> re.Pattern[str] | None:
        if not phrases:
            return None
        alternatives = "|".join(re.escape(_normalise(p)) for p in sorted(phrases, key=len, reverse=True))
        return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")

    breaks = "|".join(re.escape(_normalise(b)) for b in sorted(rules.clause_breaks, key=len, reverse=True))
    return _Negation(
        breaks=re.compile(breaks),
        zh_cues=tuple(_normalise(c) for c in rules.cues_zh),
        zh_pseudo=tuple(sorted((_normalise(p) for p in rules.pseudo_zh), key=len, reverse=True)),
        zh_terminators=tuple(_normalise(t) for t in rules.terminators_zh),
        zh_window=rules.window_chars_zh,
        en_cues=words(rules.cues_en),
        en_pseudo=tuple(p for p in (words([x]) for x in rules.pseudo_en) if p is not None),
        en_terminators=frozenset(_normalise(t) for t in rules.terminators_en),
        en_window=rules.window_words_en,
    )


def _mask_pseudo(text: str, neg: _Negation) -> str:
    """Blank out compounds that contain a cue but do not negate (无法, 不停, "not sure")."""
    for phrase in neg.zh_pseudo:
        text = text.replace(phrase, "\x00" * len(phrase))
    for pattern in neg.en_pseudo:
        text = pattern.sub(lambda m: "\x00" * len(m.group(0)), text)
    return text


def _cue_governs(scope: str, neg: _Negation) -> bool:
    """Whether a negation cue in ``scope`` (text before a term, pseudo-cues masked) reaches its end."""
    last_end = -1
    for cue in neg.zh_cues:
        position = scope.rfind(cue)
        if position >= 0:
            last_end = max(last_end, position + len(cue))
    if last_end >= 0:
        gap = scope[last_end:]
        if len(gap.strip()) <= neg.zh_window and not any(t in gap for t in neg.zh_terminators):
            return True
    if neg.en_cues is not None:
        matches = list(neg.en_cues.finditer(scope))
        if matches:
            gap_words = re.findall(r"[a-z0-9]+", scope[matches[-1].end() :])
            if len(gap_words) <= neg.en_window and not neg.en_terminators.intersection(gap_words):
                return True
    return False


def _negated(text: str, match: re.Match[str], neg: _Negation) -> bool:
    """NegEx-style: a cue before the term in the same clause, within the window, no terminator between.

    A cue inside a gapped term's gap (胸口不痛, "chest does not hurt") negates it too. Negation after
    the term (胸痛不明显) and uncertainty (可能) are not handled: such mentions fire (over-triage only).
    """
    start = match.start()
    clause_start = 0
    for brk in neg.breaks.finditer(text, 0, start):
        clause_start = brk.end()
    if _cue_governs(_mask_pseudo(text[clause_start:start], neg), neg):
        return True
    return any(gap and _cue_governs(_mask_pseudo(gap, neg), neg) for gap in match.groups())


@dataclass(frozen=True)
class _FlagMatcher:
    flag: RedFlag
    terms: tuple[_Term, ...]
    groups: tuple[tuple[_Term, ...], ...]
    exclude: tuple[re.Pattern[str], ...]
    vital: Condition | None


def _compile_flag(flag: RedFlag) -> _FlagMatcher:
    return _FlagMatcher(
        flag=flag,
        terms=tuple(_compile_term(t) for t in (*flag.terms_zh, *flag.terms_en)),
        groups=tuple(tuple(_compile_term(t) for t in group) for group in flag.all_of),
        exclude=tuple(_compile_term(t).pattern for t in flag.exclude),
        vital=flag.vital,
    )


def _excluded(text: str, match: re.Match[str], exclude: Sequence[re.Pattern[str]]) -> bool:
    for pattern in exclude:
        for hit in pattern.finditer(text):
            if hit.start() <= match.start() and match.end() <= hit.end():
                return True
    return False


def _find(term: _Term, text: str, exclude: Sequence[re.Pattern[str]], neg: _Negation | None) -> str | None:
    """The first non-excluded, non-negated occurrence of the term (``neg`` None: no negation check)."""
    for match in term.pattern.finditer(text):
        if _excluded(text, match, exclude):
            continue
        if neg is not None and _negated(text, match, neg):
            continue
        return match.group(0)
    return None


# ---- compiled rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrgencyRules:
    """A validated rules file with its word lists compiled; obtain it from :func:`load_rules`."""

    document: RulesDocument
    origin: str
    sha256: str
    _flags: tuple[_FlagMatcher, ...] = field(repr=False)
    _negation: _Negation = field(repr=False)

    @property
    def version(self) -> str:
        return self.document.version

    @property
    def signed_off(self) -> bool:
        return self.document.sign_off.signed_by is not None

    def level_info(self, level: Level) -> LevelInfo:
        return self.document.levels[level.value - 1]

    def flag(self, flag_id: str) -> RedFlag:
        for matcher in self._flags:
            if matcher.flag.id == flag_id:
                return matcher.flag
        raise KeyError(flag_id)


def _parse(raw: bytes, origin: str) -> UrgencyRules:
    try:
        document = RulesDocument.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '(file)'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:10]
        ]
        more = exc.error_count() - len(problems)
        suffix = f"; and {more} more" if more > 0 else ""
        raise RulesError(f"invalid triage rules file {origin}: {'; '.join(problems)}{suffix}") from None
    return UrgencyRules(
        document=document,
        origin=origin,
        sha256=hashlib.sha256(raw).hexdigest(),
        _flags=tuple(_compile_flag(flag) for flag in document.red_flags),
        _negation=_compile_negation(document.negation),
    )


@cache
def _default_rules() -> UrgencyRules:
    resource = resources.files("tianfu.triage").joinpath("rules").joinpath(DEFAULT_RULES_FILE)
    return _parse(resource.read_bytes(), f"tianfu/triage/rules/{DEFAULT_RULES_FILE}")


def load_rules(path: Path | str | None = None) -> UrgencyRules:
    """The shipped rules (cached) or the file at ``path``; :class:`RulesError` if it does not validate."""
    if path is None:
        return _default_rules()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RulesError(f"cannot read triage rules file {path}: {exc.strerror or exc}") from exc
    return _parse(raw, str(path))


# ---- inputs --------------------------------------------------------------------------------------

_VITAL_PARAMETER: Mapping[str, Parameter] = MappingProxyType(
    {
        "heart_rate": Parameter.PULSE,
        "systolic_bp": Parameter.SYSTOLIC_BP,
        "spo2": Parameter.SPO2,
        "temperature": Parameter.TEMPERATURE,
        "respiratory_rate": Parameter.RESPIRATORY_RATE,
    }
)
_GLUCOSE_RANGE = (0.5, 60.0)  # mmol/L a meter can report for a living patient; outside = error


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class VitalSigns:
    """Vital signs measured at the triage desk; every field optional.

    ``consciousness`` is ACVPU (A alert, C new confusion, V voice, P pain, U unresponsive);
    ``temperature`` is axillary °C (the consensus cut-off is axillary); ``on_oxygen`` only feeds the
    NEWS2 deterioration check. Values a living patient cannot have (a probe-off 0, SpO2 > 100) raise
    ``ValueError``: record a cardiac arrest as such (it is a red flag), not as heart rate 0.
    """

    heart_rate: float | None = None
    systolic_bp: float | None = None
    spo2: float | None = None
    temperature: float | None = None
    respiratory_rate: float | None = None
    gcs: int | None = None
    consciousness: str | None = None
    glucose_mmol_l: float | None = None
    on_oxygen: bool | None = None

    def __post_init__(self) -> None:
        for name, parameter in _VITAL_PARAMETER.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            validity = classify_measurement(parameter, value)
            if validity is not Validity.VALID:
                raise ValueError(f"{name}={value!r} is {validity.value.replace('_', ' ')}, not physiology")
        if self.gcs is not None and (
            isinstance(self.gcs, bool) or not isinstance(self.gcs, int) or not 3 <= self.gcs <= 15
        ):
            raise ValueError(f"gcs must be an integer from 3 to 15, got {self.gcs!r}")
        if self.consciousness is not None:
            letter = self.consciousness.strip().upper() if isinstance(self.consciousness, str) else None
            if letter not in CONSCIOUSNESS_LEVELS:
                raise ValueError(
                    f"consciousness must be one of {', '.join(CONSCIOUSNESS_LEVELS)}, "
                    f"got {self.consciousness!r}"
                )
            object.__setattr__(self, "consciousness", letter)
        glucose = self.glucose_mmol_l
        if glucose is not None and (
            not _is_number(glucose) or not _GLUCOSE_RANGE[0] <= glucose <= _GLUCOSE_RANGE[1]
        ):
            raise ValueError(f"glucose_mmol_l must be a number from 0.5 to 60, got {glucose!r}")
        if self.on_oxygen is not None and not isinstance(self.on_oxygen, bool):
            raise ValueError(f"on_oxygen must be true or false, got {self.on_oxygen!r}")

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)

    def rounded(self) -> dict[str, float | str]:
        """Present values as the rules see them: half-up to integers, temperature 0.1 °C, glucose 0.01."""
        values: dict[str, float | str] = {}
        for name, parameter in _VITAL_PARAMETER.items():
            value = getattr(self, name)
            if value is not None:
                values[name] = round_for_banding(parameter, float(value))
        if self.gcs is not None:
            values["gcs"] = self.gcs
        if self.consciousness is not None:
            values["consciousness"] = self.consciousness
        if self.glucose_mmol_l is not None:
            values["glucose_mmol_l"] = round_half_up(float(self.glucose_mmol_l), 2)
        return values


def _as_level(name: str, value: object) -> Level | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
        raise ValueError(f"{name} must be a Level (1-4), got {value!r}")
    return Level(value)


@dataclass(frozen=True)
class UrgencyInput:
    """One triage encounter. ``symptoms`` are symptom names already recognised as *present*.

    ``self_service`` inputs must not carry vital signs or a nurse rating (a kiosk or phone cannot
    measure them, and no nurse is involved); ``pain_score`` is NRS 0-10; ``age_years`` may be a
    fraction (0.1 = about five weeks).
    """

    channel: Channel
    text: str = ""
    symptoms: tuple[str, ...] = ()
    vitals: VitalSigns | None = None
    pain_score: int | None = None
    age_years: float | None = None
    nurse_level: Level | None = None
    model_level: Level | None = None

    def __post_init__(self) -> None:
        if self.channel not in ("nurse", "self_service"):
            raise ValueError(f"channel must be 'nurse' or 'self_service', got {self.channel!r}")
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a string, got {type(self.text).__name__}")
        symptoms = (self.symptoms,) if isinstance(self.symptoms, str) else tuple(self.symptoms)
        if not all(isinstance(s, str) for s in symptoms):
            raise ValueError(f"symptoms must be strings, got {self.symptoms!r}")
        object.__setattr__(self, "symptoms", symptoms)
        if self.vitals is not None and not isinstance(self.vitals, VitalSigns):
            raise ValueError(f"vitals must be VitalSigns, got {type(self.vitals).__name__}")
        pain = self.pain_score
        if pain is not None and (isinstance(pain, bool) or not isinstance(pain, int) or not 0 <= pain <= 10):
            raise ValueError(f"pain_score must be an integer 0-10 (NRS), got {pain!r}")
        age = self.age_years
        if age is not None and (not _is_number(age) or not math.isfinite(age) or not 0 <= age <= 130):
            raise ValueError(f"age_years must be a number from 0 to 130, got {age!r}")
        object.__setattr__(self, "nurse_level", _as_level("nurse_level", self.nurse_level))
        object.__setattr__(self, "model_level", _as_level("model_level", self.model_level))
        if self.channel == "self_service":
            if self.vitals is not None:
                raise ValueError("self_service input cannot carry vital signs: they are measured at the desk")
            if self.nurse_level is not None:
                raise ValueError("self_service input cannot carry a nurse rating")


# ---- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """Why a level was suggested: the rule, the level it implies, the observation, and its source."""

    rule_id: str
    level: Level
    component: str  # vital_signs | scores | red_flags | pain | nurse | model | reassessment | default
    text_zh: str
    text_en: str
    source: str
    verified: bool
    observed: str = ""


@dataclass(frozen=True)
class Caution:
    """Something the nurse must know about the suggestion (missing inputs, children, draft rules)."""

    code: str
    text_zh: str
    text_en: str


@dataclass(frozen=True)
class ComponentLevels:
    """The most urgent level each input implies (``None``: nothing met or not given)."""

    vital_signs: Level | None = None
    scores: Level | None = None
    red_flags: Level | None = None
    pain: Level | None = None
    nurse: Level | None = None
    model: Level | None = None

    @property
    def rules(self) -> Level | None:
        """The rule-defined floor: no rating or model may suggest a less urgent level."""
        return most_urgent((self.vital_signs, self.scores, self.red_flags, self.pain))


@dataclass(frozen=True)
class UrgencyResult:
    """A triage assessment; never modified (a re-triage is a new result, TRI-04).

    ``level``: nurse channel: the system's final suggestion, the most urgent of every component,
    which the nurse confirms or overrides elsewhere; self-service: always ``None``.
    ``suggested_level``: the same without the nurse's rating (rules + model), so the objective
    suggestion and the nurse's rating can both be recorded (TRI-02); ``None`` on self-service.
    ``go_to_emergency_desk`` / ``call_120``: self-service routing (always False on the nurse channel,
    where the patient is already at the desk).
    """

    channel: Channel
    level: Level | None
    suggested_level: Level | None
    components: ComponentLevels
    reasons: tuple[Reason, ...]
    red_flags: tuple[str, ...]
    go_to_emergency_desk: bool
    call_120: bool
    requires_nurse_rating: bool
    cautions: tuple[Caution, ...]
    advice_zh: str
    advice_en: str
    response_minutes: int | None
    colour: str | None
    rules_version: str
    deteriorated: bool = False


# ---- evaluation ----------------------------------------------------------------------------------

_CORE_VITALS = ("heart_rate", "systolic_bp", "spo2")  # the consensus's objective single indicators
_MEWS_INPUTS = ("heart_rate", "systolic_bp", "respiratory_rate", "temperature", "consciousness")


def _population(age_years: float | None, rules: UrgencyRules) -> Population:
    # Unknown age: adult thresholds (they mostly over-grade a child's normal vital signs, never hide an
    # adult's), with a caution.
    if age_years is not None and age_years < rules.document.adult_min_age_years:
        return "paediatric"
    return "adult"


def _observations(inp: UrgencyInput) -> dict[str, float | str]:
    values: dict[str, float | str] = {}
    if inp.vitals is not None:
        values.update(inp.vitals.rounded())
        vitals = inp.vitals
        if any(getattr(vitals, name) is not None for name in _MEWS_INPUTS):
            values["mews"] = mews(
                VitalSet(
                    pulse=vitals.heart_rate,
                    systolic_bp=vitals.systolic_bp,
                    respiratory_rate=vitals.respiratory_rate,
                    temperature=vitals.temperature,
                    consciousness=vitals.consciousness,
                )
            ).total
    if inp.pain_score is not None:
        values["pain_score"] = inp.pain_score
    return values


def _fired_rules(inp: UrgencyInput, rules: UrgencyRules) -> list[tuple[Rule, float | str]]:
    population = _population(inp.age_years, rules)
    observed = _observations(inp)
    fired = []
    for rule in rules.document.rules:
        value = observed.get(rule.condition.parameter)
        if value is not None and population in rule.applies_to and rule.condition.holds(value):
            fired.append((rule, value))
    return fired


def _format_value(value: float | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _rule_reason(rule: Rule, value: float | str) -> Reason:
    return Reason(
        rule_id=rule.id,
        level=Level(rule.level),
        component=_COMPONENT[rule.condition.parameter],
        text_zh=rule.text_zh,
        text_en=rule.text_en,
        source=rule.source,
        verified=rule.verified,
        observed=f"{rule.condition.parameter}={_format_value(value)}",
    )


def _red_flags(inp: UrgencyInput, rules: UrgencyRules) -> list[Reason]:
    text = _normalise(inp.text)
    symptoms = [_normalise(s) for s in inp.symptoms]
    neg = rules._negation
    vitals = inp.vitals.rounded() if inp.vitals is not None else {}
    reasons = []
    for matcher in rules._flags:
        flag = matcher.flag

        def evidence_for(terms: Sequence[_Term], exclude: Sequence[re.Pattern[str]]) -> str | None:
            for term in terms:
                said = _find(term, text, exclude, neg)
                if said is not None:
                    return f"text: {said}"
                for symptom in symptoms:
                    if _find(term, symptom, exclude, None) is not None:
                        return f"symptom: {symptom}"
            return None

        evidence = evidence_for(matcher.terms, matcher.exclude)
        if evidence is None and matcher.groups:
            parts = [evidence_for(group, matcher.exclude) for group in matcher.groups]
            if all(parts):
                evidence = " + ".join(p for p in parts if p)
        if evidence is None and matcher.vital is not None:
            value = vitals.get(matcher.vital.parameter)
            if value is not None and matcher.vital.holds(value):
                evidence = f"{matcher.vital.parameter}={_format_value(value)}"
        too_old = flag.max_age_years is not None and (
            inp.age_years is None or inp.age_years >= flag.max_age_years
        )
        if too_old:
            evidence = None
        if evidence is not None:
            reasons.append(
                Reason(
                    rule_id=flag.id,
                    level=Level(flag.level),
                    component="red_flags",
                    text_zh=flag.text_zh,
                    text_en=flag.text_en,
                    source=flag.source,
                    verified=flag.verified,
                    observed=evidence,
                )
            )
    return reasons


def _components(reasons: Sequence[Reason], inp: UrgencyInput) -> ComponentLevels:
    def level_of(component: str) -> Level | None:
        return most_urgent(r.level for r in reasons if r.component == component)

    return ComponentLevels(
        vital_signs=level_of("vital_signs"),
        scores=level_of("scores"),
        red_flags=level_of("red_flags"),
        pain=level_of("pain"),
        nurse=inp.nurse_level,
        model=inp.model_level,
    )


def _input_reasons(inp: UrgencyInput) -> list[Reason]:
    reasons = []
    if inp.nurse_level is not None:
        reasons.append(
            Reason(
                "NURSE-RATING",
                inp.nurse_level,
                "nurse",
                "预检护士人工评级",
                "triage nurse's manual rating",
                "triage.md §1.3/§1.5 TRI-02: objective indicators combined with the manual rating",
                True,
                f"nurse_level={inp.nurse_level.roman}",
            )
        )
    if inp.model_level is not None:
        reasons.append(
            Reason(
                "MODEL-SUGGESTION",
                inp.model_level,
                "model",
                "模型建议（只能升级，不能降级）",
                "model suggestion (may raise, never lower, the level)",
                "triage.md §2 guidance 2: a learned score never downgrades a rule-defined level",
                True,
                f"model_level={inp.model_level.roman}",
            )
        )
    return reasons


_CAUTIONS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "rules-draft": (
            "分级规则为草案，尚未经急诊科负责人审核签字，仅供辅助参考。",
            "The triage rules are a draft not yet signed off by the ED leads; decision support only.",
        ),
        "self-service-no-level": (
            "自助渠道无法测量生命体征，不给出预检分级；分级须由急诊预检护士评定。",
            "A self-service channel cannot measure vital signs, so it gives no triage level; "
            "the emergency triage nurse grades the patient.",
        ),
        "paediatric-vitals-not-graded": (
            "儿童患者：本规则集没有儿童年龄别心率、血压、呼吸频率阈值（未实现PEWS），这些指标不自动分级；"
            "血氧、体温、血糖、意识、疼痛和危险信号仍适用。请护士按儿科标准人工评级。",
            "Paediatric patient: these rules have no age-specific heart rate, blood pressure or "
            "respiratory rate bands (PEWS not implemented), so those are not graded; SpO2, "
            "temperature, glucose, consciousness, pain and red flags still apply. The nurse must rate "
            "the child with paediatric criteria.",
        ),
        "age-unknown": (
            "未记录年龄：按成人阈值评估。",
            "Age not recorded: adult thresholds applied.",
        ),
        "no-vitals": (
            "未测量生命体征：仅依据主诉、疼痛和人工评级，须测量后重新评估。",
            "No vital signs measured: graded on complaint, pain and ratings only; re-assess once measured.",
        ),
        "core-vitals-missing": (
            "心率、收缩压、血氧饱和度未测全：客观指标不完整。",
            "Heart rate, systolic BP and SpO2 not all measured: the objective indicators are incomplete.",
        ),
    }
)


def _caution(code: str) -> Caution:
    zh, en = _CAUTIONS[code]
    return Caution(code, zh, en)


def _nurse_advice(level: Level, info: LevelInfo, requires_rating: bool) -> tuple[str, str]:
    if info.response_minutes == 0:
        when_zh, when_en = "需立即响应", "respond immediately"
    else:
        when_zh = f"应在{info.response_minutes}分钟内响应"
        when_en = f"respond within {info.response_minutes} min"
    zh = (
        f"系统建议分级：{level.roman}级 {info.name_zh}（{info.colour_zh}色，{info.zone_zh}），{when_zh}。"
        "最终分级须由预检护士确认并记录。"
    )
    en = (
        f"Suggested level: {level.roman} {info.name_en} ({info.colour}, {info.zone_en}); {when_en}. "
        "The triage nurse confirms and records the final level."
    )
    if requires_rating:
        zh += "客观指标不全或为儿童患者：必须由预检护士人工评级。"
        en += " Objective indicators are incomplete or the patient is a child: a nurse rating is required."
    return zh, en


def _sorted_reasons(reasons: Iterable[Reason]) -> tuple[Reason, ...]:
    return tuple(sorted(reasons, key=lambda r: (r.level, r.component, r.rule_id)))


def assess(inp: UrgencyInput, rules: UrgencyRules | None = None) -> UrgencyResult:
    """Grade one encounter (see the module docstring); pure apart from loading the default rules."""
    rules = rules or load_rules()
    reasons = [_rule_reason(rule, value) for rule, value in _fired_rules(inp, rules)]
    reasons += _red_flags(inp, rules)
    reasons += _input_reasons(inp)
    components = _components(reasons, inp)
    flags = tuple(r.rule_id for r in _sorted_reasons(r for r in reasons if r.component == "red_flags"))
    cautions = [] if rules.signed_off else [_caution("rules-draft")]

    if inp.channel == "self_service":
        cautions.append(_caution("self-service-no-level"))
        # Any red flag (even a Ⅲ one such as a head injury) or a Ⅰ/Ⅱ from pain or the model needs the
        # desk: only a nurse with measured vital signs can grade it.
        urgent = most_urgent((components.pain, components.model))
        go = bool(flags) or (urgent is not None and urgent <= Level.II)
        call = any(rules.flag(f).call_120 for f in flags)
        advice = rules.document.self_service
        if call:
            zh, en = advice.call_120_zh, advice.call_120_en
        elif go:
            zh, en = advice.emergency_zh, advice.emergency_en
        else:
            zh, en = advice.outpatient_zh, advice.outpatient_en
        return UrgencyResult(
            channel="self_service",
            level=None,
            suggested_level=None,
            components=components,
            reasons=_sorted_reasons(reasons),
            red_flags=flags,
            go_to_emergency_desk=go,
            call_120=call,
            requires_nurse_rating=False,
            cautions=tuple(cautions),
            advice_zh=zh,
            advice_en=en,
            response_minutes=None,
            colour=None,
            rules_version=rules.version,
        )

    population = _population(inp.age_years, rules)
    vitals = inp.vitals if inp.vitals is not None and not inp.vitals.empty else None
    if population == "paediatric":
        cautions.append(_caution("paediatric-vitals-not-graded"))
    if inp.age_years is None:
        cautions.append(_caution("age-unknown"))
    if vitals is None:
        cautions.append(_caution("no-vitals"))
    elif any(getattr(vitals, name) is None for name in _CORE_VITALS):
        cautions.append(_caution("core-vitals-missing"))
    incomplete = (
        population == "paediatric"
        or vitals is None
        or any(getattr(vitals, name) is None for name in _CORE_VITALS)
    )
    requires_rating = incomplete and inp.nurse_level is None

    suggested = most_urgent((components.rules, components.model))
    if suggested is None:
        suggested = Level.IV
        reasons.append(
            Reason(
                "DEFAULT-IV",
                Level.IV,
                "default",
                "未触发任何急危重指标",
                "no rule met",
                "triage.md §1.3 Ⅳ: vital signs stable, minor complaints",
                False,
            )
        )
    level = min(suggested, inp.nurse_level) if inp.nurse_level is not None else suggested
    info = rules.level_info(level)
    zh, en = _nurse_advice(level, info, requires_rating)
    return UrgencyResult(
        channel="nurse",
        level=level,
        suggested_level=suggested,
        components=components,
        reasons=_sorted_reasons(reasons),
        red_flags=flags,
        go_to_emergency_desk=False,
        call_120=False,
        requires_nurse_rating=requires_rating,
        cautions=tuple(cautions),
        advice_zh=zh,
        advice_en=en,
        response_minutes=info.response_minutes,
        colour=info.colour,
        rules_version=rules.version,
    )


# ---- re-assessment while waiting (TRI-04) --------------------------------------------------------


def _rule_levels_by_parameter(inp: UrgencyInput, rules: UrgencyRules) -> dict[str, Level]:
    levels: dict[str, Level] = {}
    for rule, _ in _fired_rules(inp, rules):
        parameter = rule.condition.parameter
        if parameter != "pain_score":
            levels[parameter] = min(levels.get(parameter, Level.IV), Level(rule.level))
    return levels


def _news2_subscores(vitals: VitalSigns) -> Mapping[str, int | None]:
    return news2(
        VitalSet(
            respiratory_rate=vitals.respiratory_rate,
            spo2=vitals.spo2,
            on_oxygen=vitals.on_oxygen,
            systolic_bp=vitals.systolic_bp,
            pulse=vitals.heart_rate,
            consciousness=vitals.consciousness,
            temperature=vitals.temperature,
        )
    ).subscores


def _deterioration(old_input: UrgencyInput, new_input: UrgencyInput, rules: UrgencyRules) -> list[str]:
    """What got worse between two measurements (empty: nothing), per the rules file's definition.

    Only parameters measured both times are compared: a first measurement is new information, graded
    by the fresh assessment, not a trend.
    """
    old, new = old_input.vitals, new_input.vitals
    assert old is not None
    assert new is not None
    criteria = rules.document.deterioration
    found: list[str] = []
    old_values, new_values = old.rounded(), new.rounded()
    measured_both = set(old_values) & set(new_values)
    mews_inputs = set(_MEWS_INPUTS)
    if old_values.keys() & mews_inputs and old_values.keys() & mews_inputs == new_values.keys() & mews_inputs:
        measured_both.add("mews")  # same inputs both times, so a higher MEWS is not just a new measurement
    if _population(new_input.age_years, rules) == "adult":  # NEWS2 is for adults only
        before, after = _news2_subscores(old), _news2_subscores(new)
        shared = [k for k in before if before[k] is not None and after[k] is not None]
        rise = sum(after[k] or 0 for k in shared) - sum(before[k] or 0 for k in shared)
        if shared and rise >= criteria.news2_rise:
            found.append(f"NEWS2 +{rise} over {', '.join(shared)}")
    before_levels = _rule_levels_by_parameter(old_input, rules)
    for parameter, level in sorted(_rule_levels_by_parameter(new_input, rules).items()):
        previous = before_levels.get(parameter)
        if parameter in measured_both and (previous is None or level < previous):
            found.append(f"{parameter} now meets a {level.roman} rule")
    if old.gcs is not None and new.gcs is not None and old.gcs - new.gcs >= criteria.gcs_fall:
        found.append(f"GCS {old.gcs} → {new.gcs}")
    return found


def reassess(
    previous: UrgencyResult,
    previous_input: UrgencyInput,
    new_vitals: VitalSigns,
    rules: UrgencyRules | None = None,
) -> UrgencyResult:
    """Re-grade a waiting patient with newly measured vital signs (TRI-04); returns a new result.

    The new level is the most urgent of: a fresh assessment with the new vital signs (same complaint,
    age, pain and nurse rating as before); the previous level (a re-check never lowers the level by
    itself: lowering is the nurse's explicit re-triage with a new rating); and, when the vital signs
    deteriorated (rules file ``deterioration``), the previous level moved up one (2011 principle),
    even if no hard threshold was crossed. Without vital signs on both sides there is no trend to judge:
    the result is the fresh assessment, floored at the previous level. Neither ``previous`` nor
    ``previous_input`` is modified.
    """
    rules = rules or load_rules()
    if previous.channel != "nurse" or previous.level is None or previous_input.channel != "nurse":
        raise ValueError("reassess needs a nurse-channel assessment: self-service has no level")
    new_input = replace(previous_input, vitals=new_vitals)
    fresh = assess(new_input, rules)
    assert fresh.level is not None
    assert fresh.suggested_level is not None
    extra: list[Reason] = []
    floor = previous.level
    if fresh.level > previous.level:
        extra.append(
            Reason(
                "REASSESS-NO-AUTO-DOWNGRADE",
                previous.level,
                "reassessment",
                "复评不自动降级：降级须由护士重新评级",
                "a re-check does not lower the level by itself: the nurse re-triages to lower it",
                "triage.md §1.5 TRI-04: re-triage is a new assessment, never an overwrite",
                False,
                f"previous level={previous.level.roman}",
            )
        )
    # Nothing measured before (or nothing now): no trend to judge, only the fresh grade and the floor.
    comparable = not (previous_input.vitals is None or previous_input.vitals.empty or new_vitals.empty)
    worse = _deterioration(previous_input, new_input, rules) if comparable else []
    if worse:
        floor = previous.level.up_one()
        criteria = rules.document.deterioration
        extra.append(
            Reason(
                "TRI04-DETERIORATION",
                floor,
                "reassessment",
                "候诊期间生命体征恶化，分级上调一级",
                "vital signs deteriorated while waiting: moved up one level",
                criteria.source,
                criteria.verified,
                "; ".join(worse),
            )
        )
    level = min(fresh.level, floor)
    suggested = min(fresh.suggested_level, floor)
    info = rules.level_info(level)
    zh, en = _nurse_advice(level, info, fresh.requires_nurse_rating)
    return replace(
        fresh,
        level=level,
        suggested_level=suggested,
        reasons=_sorted_reasons((*fresh.reasons, *extra)),
        advice_zh=zh,
        advice_en=en,
        response_minutes=info.response_minutes,
        colour=info.colour,
        deteriorated=bool(worse),
    )
