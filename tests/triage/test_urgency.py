"""Urgency (急诊预检分级): rules file, vignettes, override property, self-service, re-assessment."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tianfu.monitoring.scores import mews
from tianfu.monitoring.vitals import VitalSet
from tianfu.triage.urgency import (
    DEFAULT_RULES_FILE,
    Level,
    RulesError,
    UrgencyInput,
    UrgencyResult,
    VitalSigns,
    assess,
    load_rules,
    reassess,
)

ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = ROOT / "src" / "tianfu" / "triage" / "rules" / DEFAULT_RULES_FILE
VIGNETTES_PATH = Path(__file__).with_name("vignettes.json")
RAW_RULES: dict[str, Any] = json.loads(RULES_PATH.read_text(encoding="utf-8"))
VIGNETTES: list[dict[str, Any]] = json.loads(VIGNETTES_PATH.read_text(encoding="utf-8"))["vignettes"]
NORMAL: dict[str, Any] = {
    "heart_rate": 78,
    "systolic_bp": 124,
    "spo2": 98,
    "temperature": 36.7,
    "respiratory_rate": 14,
    "consciousness": "A",
}


def _load_measure_script() -> ModuleType:
    path = ROOT / "training" / "triage" / "measure_vignettes.py"
    spec = importlib.util.spec_from_file_location("measure_vignettes", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MEASURE = _load_measure_script()


def nurse(text: str = "", age: float | None = 40, **kwargs: Any) -> UrgencyResult:
    vitals = kwargs.pop("vitals", None)
    return assess(
        UrgencyInput(
            channel="nurse",
            text=text,
            age_years=age,
            vitals=VitalSigns(**vitals) if isinstance(vitals, dict) else vitals,
            **kwargs,
        )
    )


def with_vitals(**changes: Any) -> dict[str, Any]:
    return {**NORMAL, **changes}


# ---- the rules file ------------------------------------------------------------------------------


def test_shipped_rules_are_a_versioned_unsigned_draft() -> None:
    rules = load_rules()
    assert rules is load_rules()  # cached
    assert rules.version == RAW_RULES["version"]
    assert "draft" in rules.document.status
    assert "sign-off" in rules.document.status
    assert not rules.signed_off
    assert [rules.level_info(level).response_minutes for level in Level] == [0, 10, 30, 240]
    assert [rules.level_info(level).colour for level in Level] == ["red", "orange", "yellow", "green"]
    assert [rules.level_info(level).name_zh for level in Level] == ["急危", "急重", "急症", "亚急症或非急症"]


@pytest.mark.parametrize("entry", RAW_RULES["rules"] + RAW_RULES["red_flags"], ids=lambda e: str(e["id"]))
def test_every_rule_has_a_source_texts_and_a_verified_flag(entry: dict[str, Any]) -> None:
    assert entry["source"].strip()
    assert entry["text_zh"].strip()
    assert entry["text_en"].strip()
    assert isinstance(entry["verified"], bool)
    assert entry["level"] in (1, 2, 3, 4)


def test_unverified_thresholds_are_marked_unverified() -> None:
    # triage.md marks every consensus/site threshold unverified; only the 2011 pain rule is checked.
    verified = {r["id"] for r in RAW_RULES["rules"] if r["verified"]}
    assert verified == {"PAIN-II"}
    assert not any(f["verified"] for f in RAW_RULES["red_flags"])


def test_disagreeing_sources_use_the_more_urgent_boundary() -> None:
    notes = {r["id"]: r.get("note", "") for r in RAW_RULES["rules"]}
    for rule_id in ("HR-II-LOW", "SBP-II-LOW", "SPO2-II", "GCS-I"):
        assert "more urgent" in notes[rule_id], rule_id
    assert nurse(vitals=with_vitals(heart_rate=50)).level == Level.II  # consensus 40-50, site 40-49
    assert nurse(vitals=with_vitals(systolic_bp=80)).level == Level.II  # 70-80 vs 70-79
    assert nurse(vitals=with_vitals(spo2=90)).level == Level.II  # 80-90 vs 80-89
    assert nurse(vitals=with_vitals(heart_rate=150)).level == Level.II  # site Ⅱ and Ⅲ share 150


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "rules.json"
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path


def _broken(change: str) -> Any:
    document = copy.deepcopy(RAW_RULES)
    if change == "missing source":
        del document["rules"][0]["source"]
    elif change == "blank source":
        document["red_flags"][0]["source"] = "  "
    elif change == "unknown key":
        document["rules"][0]["threshold"] = 40
    elif change == "bad comparison":
        document["rules"][0]["condition"]["comparison"] = "=="
    elif change == "reversed between":
        document["rules"][2]["condition"]["values"] = [50, 40]
    elif change == "string value":
        document["rules"][0]["condition"]["value"] = "40"
    elif change == "duplicate id":
        document["rules"][1]["id"] = document["rules"][0]["id"]
    elif change == "level 5":
        document["rules"][0]["level"] = 5
    elif change == "missing level":
        document["levels"] = document["levels"][:3]
    elif change == "unsigned but not draft":
        document["status"] = "approved"
    elif change == "consciousness with <":
        document["rules"][0]["condition"] = {"parameter": "consciousness", "comparison": "<", "value": 1}
    elif change == "flag without trigger":
        flag = document["red_flags"][0]
        flag["terms_zh"], flag["terms_en"] = [], []
    elif change == "unknown parameter":
        document["rules"][0]["condition"]["parameter"] = "lactate"
    elif change == "not json":
        return '{"format": "tianfu.triage.urgency-rules/1",'
    else:  # pragma: no cover - parametrize lists every change
        raise AssertionError(change)
    return document


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ("missing source", "rules.0.source"),
        ("blank source", "red_flags.0.source"),
        ("unknown key", "rules.0.threshold"),
        ("bad comparison", "rules.0.condition.comparison"),
        ("reversed between", "between"),
        ("string value", "rules.0.condition"),
        ("duplicate id", "duplicate rule id HR-I-LOW"),
        ("level 5", "rules.0.level"),
        ("missing level", "levels must list"),
        ("unsigned but not draft", "draft"),
        ("consciousness with <", "'in' comparison"),
        ("flag without trigger", "no trigger"),
        ("unknown parameter", "rules.0.condition.parameter"),
        ("not json", "json"),
    ],
)
def test_malformed_rules_file_fails_clearly(tmp_path: Path, change: str, mentions: str) -> None:
    path = _write(tmp_path, _broken(change))
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert str(path) in message
    assert mentions.lower() in message.lower()


def test_missing_rules_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read triage rules file"):
        load_rules(tmp_path / "absent.json")


def test_a_copy_of_the_shipped_file_loads_and_response_times_are_configurable(tmp_path: Path) -> None:
    document = copy.deepcopy(RAW_RULES)
    document["levels"][3]["response_minutes"] = 120
    rules = load_rules(_write(tmp_path, document))
    result = assess(UrgencyInput(channel="nurse", text="咽痛", vitals=VitalSigns(**NORMAL)), rules)
    assert result.level == Level.IV
    assert result.response_minutes == 120


# ---- vignettes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vignette", VIGNETTES, ids=lambda v: str(v["id"]))
def test_vignette(vignette: dict[str, Any]) -> None:
    result = assess(MEASURE.vignette_input(vignette))
    if vignette["channel"] == "nurse":
        assert result.level is not None
        expected = Level(vignette["expected_level"])
        assert result.level <= expected, f"under-triage: {result.level!r} for expected {expected!r}"
        if vignette.get("exact", False):
            assert result.level == expected
    else:
        assert result.level is None
        assert result.suggested_level is None
        assert result.go_to_emergency_desk is vignette["expected_go_to_emergency_desk"]
        assert result.call_120 is vignette["expected_call_120"]
    if "expected_red_flags" in vignette:
        assert set(result.red_flags) == set(vignette["expected_red_flags"])
    if "expected_requires_nurse_rating" in vignette:
        assert result.requires_nurse_rating is vignette["expected_requires_nurse_rating"]
    assert vignette["rationale"].strip()


def test_vignettes_cover_levels_rules_red_flags_and_channels() -> None:
    assert len(VIGNETTES) >= 60
    assert len({v["id"] for v in VIGNETTES}) == len(VIGNETTES)
    nurse_vignettes = [v for v in VIGNETTES if v["channel"] == "nurse"]
    assert {v["expected_level"] for v in nurse_vignettes} == {1, 2, 3, 4}
    assert sum(v["channel"] == "self_service" for v in VIGNETTES) >= 10
    assert sum(v.get("age") is not None and v["age"] < 14 for v in VIGNETTES) >= 5
    assert sum(any("A" <= c <= "z" for c in v["text"][:3]) for v in VIGNETTES) >= 5  # some English
    fired: set[str] = set()
    for vignette in VIGNETTES:
        fired |= {r.rule_id for r in assess(MEASURE.vignette_input(vignette)).reasons}
    every = {r["id"] for r in RAW_RULES["rules"]} | {f["id"] for f in RAW_RULES["red_flags"]}
    assert every - fired == set()


def test_measure_script_reports_zero_under_triage(capsys: pytest.CaptureFixture[str]) -> None:
    assert MEASURE.main(["--vignettes", str(VIGNETTES_PATH)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == sum(v["channel"] == "nurse" for v in VIGNETTES)
    assert metrics["under_triage_rate"] == 0.0
    assert metrics["self_service_missed_referral_rate"] == 0.0
    assert 0.0 < metrics["over_triage_rate"] < 0.1  # the exact=false vignettes are over-triaged on purpose
    assert metrics["quadratic_weighted_kappa"] > 0.9


def test_quadratic_weighted_kappa() -> None:
    kappa = MEASURE.quadratic_weighted_kappa
    assert kappa([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kappa([1, 1, 4, 4], [4, 4, 1, 1]) < 0
    assert 0 < kappa([1, 2, 3, 4, 4], [1, 2, 3, 3, 4]) < 1


# ---- red flags and negation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("胸口很痛", "RF-CHEST-PAIN"),
        ("胸口非常痛", "RF-CHEST-PAIN"),
        ("无明显诱因出现胸痛", "RF-CHEST-PAIN"),
        ("休息后仍未缓解的胸痛", "RF-CHEST-PAIN"),
        ("没有发烧，但胸口很痛", "RF-CHEST-PAIN"),
        ("没有外伤史突然胸痛", "RF-CHEST-PAIN"),
        ("我不知道是不是胸痛", "RF-CHEST-PAIN"),
        ("no fever but chest pain", "RF-CHEST-PAIN"),
        ("止不住地流血", "RF-MAJOR-BLEEDING"),
        ("I can't stop the bleeding", "RF-MAJOR-BLEEDING"),
        ("I can't breathe", "RF-DYSPNOEA"),
        ("无法呼吸", "RF-DYSPNOEA"),
        ("左侧肢体无力", "RF-STROKE"),
        ("he is not breathing", "RF-ARREST"),
        ("对呼唤无反应", "RF-COMA"),
    ],
)
def test_red_flag_fires(text: str, flag: str) -> None:
    assert flag in nurse(text).red_flags


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("没有胸痛，只是咳嗽", "RF-CHEST-PAIN"),
        ("否认胸痛", "RF-CHEST-PAIN"),
        ("胸口不痛", "RF-CHEST-PAIN"),
        ("无胸痛、无呼吸困难", "RF-DYSPNOEA"),
        ("没有发热、咳嗽、胸痛", "RF-CHEST-PAIN"),
        ("no chest pain", "RF-CHEST-PAIN"),
        ("I don't have chest pain", "RF-CHEST-PAIN"),
        ("my chest does not hurt", "RF-CHEST-PAIN"),
        ("denies chest pain or shortness of breath", "RF-DYSPNOEA"),
        ("没有自杀念头", "RF-SUICIDAL"),
        ("撞到头，无意识丧失", "RF-COMA"),
        ("食物中毒", "RF-POISONING"),
        ("眼皮抽搐", "RF-SEIZURE"),
        ("中风险地区", "RF-STROKE"),
        ("有窒息感", "RF-AIRWAY"),
        ("耳膜穿孔", "RF-PERFORATION"),
    ],
)
def test_red_flag_negated_or_excluded(text: str, flag: str) -> None:
    assert flag not in nurse(text).red_flags


def test_symptom_names_are_matched_without_negation_check() -> None:
    # The symptom list holds present symptoms only (intake resolved negation already).
    result = assess(UrgencyInput(channel="nurse", symptoms=("胸痛",), vitals=VitalSigns(**NORMAL)))
    assert result.red_flags == ("RF-CHEST-PAIN",)
    assert any(r.observed == "symptom: 胸痛" for r in result.reasons)


def test_infant_fever_needs_a_recorded_age_under_three_months() -> None:
    assert "RF-INFANT-FEVER" in nurse("发烧", age=0.2).red_flags
    assert "RF-INFANT-FEVER" not in nurse("发烧", age=0.25).red_flags
    assert "RF-INFANT-FEVER" not in nurse("发烧", age=None).red_flags
    by_thermometer = nurse("吃奶少", age=0.1, vitals={"temperature": 38.0})
    assert "RF-INFANT-FEVER" in by_thermometer.red_flags


# ---- vital signs, channels, children ------------------------------------------------------------


def test_rounding_is_half_up_before_banding() -> None:
    assert nurse(vitals=with_vitals(heart_rate=180.4)).level == Level.II
    assert nurse(vitals=with_vitals(heart_rate=180.5)).level == Level.I
    assert nurse(vitals=with_vitals(temperature=41.04)).level == Level.III  # 41.0: MEWS only
    assert nurse(vitals=with_vitals(temperature=41.05)).level == Level.I


@pytest.mark.parametrize(
    "bad",
    [
        {"heart_rate": 0},
        {"spo2": 101},
        {"systolic_bp": -100},
        {"temperature": 50},
        {"heart_rate": True},
        {"heart_rate": "80"},
        {"gcs": 2},
        {"gcs": 14.5},
        {"consciousness": "X"},
        {"glucose_mmol_l": 0},
        {"on_oxygen": "yes"},
    ],
)
def test_vital_signs_reject_non_physiological_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        VitalSigns(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"channel": "kiosk"},
        {"channel": "nurse", "pain_score": 11},
        {"channel": "nurse", "pain_score": True},
        {"channel": "nurse", "age_years": -1},
        {"channel": "nurse", "nurse_level": 5},
        {"channel": "self_service", "vitals": VitalSigns(heart_rate=80)},
        {"channel": "self_service", "nurse_level": Level.II},
    ],
)
def test_input_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        UrgencyInput(**bad)


def test_self_service_routing_and_advice() -> None:
    red = assess(UrgencyInput(channel="self_service", text="喘不上气"))
    assert red.level is None
    assert red.go_to_emergency_desk
    assert not red.call_120
    assert "请立即前往急诊预检台" in red.advice_zh
    assert "emergency triage desk" in red.advice_en
    severe = assess(UrgencyInput(channel="self_service", text="家里老人叫不醒"))
    assert severe.call_120
    assert "120" in severe.advice_zh
    calm = assess(UrgencyInput(channel="self_service", text="嗓子疼两天"))
    assert not calm.go_to_emergency_desk
    assert "门诊" in calm.advice_zh
    assert "worse" in calm.advice_en
    assert calm.response_minutes is None
    assert {c.code for c in calm.cautions} >= {"self-service-no-level", "rules-draft"}


def test_nurse_channel_records_suggestion_and_rating_separately() -> None:
    result = nurse("咽痛", vitals=with_vitals(), nurse_level=Level.II)
    assert result.suggested_level == Level.IV  # rules + model (TRI-02: the objective suggestion)
    assert result.level == Level.II  # the nurse's rating is more urgent
    assert result.components.nurse == Level.II
    assert not result.go_to_emergency_desk
    assert "Ⅱ" in result.advice_zh
    assert result.response_minutes == 10
    assert result.colour == "orange"


def test_a_nurse_rating_cannot_go_below_a_rule() -> None:
    result = nurse(vitals=with_vitals(spo2=85), nurse_level=Level.IV)
    assert result.level == Level.II
    assert result.components.rules == Level.II


def test_children_get_no_vital_sign_auto_level_for_age_dependent_parameters() -> None:
    child = nurse("心跳快", age=5, vitals={"heart_rate": 200, "systolic_bp": 65, "respiratory_rate": 50})
    assert child.level == Level.IV
    assert child.requires_nurse_rating
    assert "paediatric-vitals-not-graded" in {c.code for c in child.cautions}
    assert child.components.vital_signs is None
    rated = nurse("心跳快", age=5, vitals={"heart_rate": 200}, nurse_level=Level.II)
    assert rated.level == Level.II
    assert not rated.requires_nurse_rating
    assert nurse(age=5, vitals={"spo2": 85}).level == Level.II  # SpO2 applies to every age
    assert nurse(age=14, vitals=with_vitals(heart_rate=200)).level == Level.I  # adult from 14


def test_missing_inputs_are_flagged() -> None:
    nothing = nurse("咳嗽", age=None)
    assert nothing.level == Level.IV
    assert nothing.requires_nurse_rating
    assert {"no-vitals", "age-unknown"} <= {c.code for c in nothing.cautions}
    partial = nurse("咳嗽", vitals={"temperature": 37.0})
    assert "core-vitals-missing" in {c.code for c in partial.cautions}


def test_results_are_immutable() -> None:
    result = nurse("胸痛", vitals=with_vitals())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.level = Level.IV  # type: ignore[misc]


# ---- the override property -----------------------------------------------------------------------


def _half_up(value: float, places: str) -> float:
    return float(Decimal(repr(float(value))).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def _oracle_holds(condition: Mapping[str, Any], value: float | str) -> bool:
    comparison = condition["comparison"]
    if comparison == "in":
        return value in condition["values"]
    assert isinstance(value, int | float)
    if comparison == "between":
        low, high = condition["values"]
        return bool(low <= value <= high)
    threshold = condition["value"]
    outcomes: dict[str, bool] = {
        "<": value < threshold,
        "<=": value <= threshold,
        ">": value > threshold,
        ">=": value >= threshold,
    }
    return outcomes[comparison]


def _oracle_levels(vitals: VitalSigns, pain: int | None, age: float | None) -> dict[str, Level | None]:
    """The vital-sign, MEWS, pain and measured red-flag levels, straight from the JSON file (independent of
    the module)."""
    population = "paediatric" if age is not None and age < RAW_RULES["adult_min_age_years"] else "adult"
    observed: dict[str, float | str] = {}
    for name in ("heart_rate", "systolic_bp", "spo2", "respiratory_rate"):
        if getattr(vitals, name) is not None:
            observed[name] = _half_up(getattr(vitals, name), "1")
    if vitals.temperature is not None:
        observed["temperature"] = _half_up(vitals.temperature, "0.1")
    if vitals.glucose_mmol_l is not None:
        observed["glucose_mmol_l"] = _half_up(vitals.glucose_mmol_l, "0.01")
    if vitals.gcs is not None:
        observed["gcs"] = vitals.gcs
    if vitals.consciousness is not None:
        observed["consciousness"] = vitals.consciousness
    mews_inputs = (vitals.heart_rate, vitals.systolic_bp, vitals.respiratory_rate, vitals.temperature)
    if any(v is not None for v in mews_inputs) or vitals.consciousness is not None:
        observed["mews"] = mews(
            VitalSet(
                pulse=vitals.heart_rate,
                systolic_bp=vitals.systolic_bp,
                respiratory_rate=vitals.respiratory_rate,
                temperature=vitals.temperature,
                consciousness=vitals.consciousness,
            )
        ).total
    if pain is not None:
        observed["pain_score"] = pain
    levels: dict[str, Level | None] = {"vital": None, "mews": None, "pain": None, "red_flag": None}
    for flag in RAW_RULES["red_flags"]:  # red flags a measurement raises by itself (fever in a young infant)
        value = observed.get(flag["vital"]["parameter"]) if "vital" in flag else None
        if value is None or age is None or age >= flag.get("max_age_years", float("inf")):
            continue
        if _oracle_holds(flag["vital"], value):
            current = levels["red_flag"]
            levels["red_flag"] = (
                Level(flag["level"]) if current is None else min(current, Level(flag["level"]))
            )
    for rule in RAW_RULES["rules"]:
        parameter = rule["condition"]["parameter"]
        value = observed.get(parameter)
        if value is None or population not in rule["applies_to"]:
            continue
        if _oracle_holds(rule["condition"], value):
            key = {"mews": "mews", "pain_score": "pain"}.get(parameter, "vital")
            current = levels[key]
            levels[key] = Level(rule["level"]) if current is None else min(current, Level(rule["level"]))
    return levels


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


vital_signs = st.builds(
    VitalSigns,
    heart_rate=_optional(st.one_of(st.integers(1, 300), st.floats(1, 300, allow_nan=False))),
    systolic_bp=_optional(st.integers(1, 300)),
    spo2=_optional(st.one_of(st.integers(1, 100), st.floats(1, 100, allow_nan=False))),
    temperature=_optional(st.floats(25, 45, allow_nan=False)),
    respiratory_rate=_optional(st.integers(1, 150)),
    gcs=_optional(st.integers(3, 15)),
    consciousness=_optional(st.sampled_from("ACVPU")),
    glucose_mmol_l=_optional(st.floats(0.5, 60, allow_nan=False)),
    on_oxygen=_optional(st.booleans()),
)
levels = _optional(st.sampled_from(list(Level)))
ages = _optional(st.one_of(st.floats(0, 100, allow_nan=False), st.integers(0, 100)))
pains = _optional(st.integers(0, 10))


@settings(max_examples=300, deadline=None)
@given(vitals=vital_signs, nurse_level=levels, model_level=levels, pain=pains, age=ages)
@example(vitals=VitalSigns(temperature=38.0), nurse_level=None, model_level=None, pain=None, age=0.0)
def test_final_level_is_the_most_urgent_input_and_never_below_a_rule(
    vitals: VitalSigns,
    nurse_level: Level | None,
    model_level: Level | None,
    pain: int | None,
    age: float | None,
) -> None:
    inp = UrgencyInput(
        channel="nurse",
        vitals=vitals,
        pain_score=pain,
        age_years=age,
        nurse_level=nurse_level,
        model_level=model_level,
    )
    result = assess(inp)
    assert result.level is not None
    oracle = _oracle_levels(vitals, pain, age)
    inputs = [*oracle.values(), nurse_level, model_level]
    for other in inputs:
        if other is not None:
            assert result.level <= other  # never less urgent than any rule or rating
    present = [level for level in inputs if level is not None]
    assert result.level == (min(present) if present else Level.IV)
    # A model can only raise the level: a Ⅳ suggestion changes nothing.
    assert (
        assess(dataclasses.replace(inp, model_level=Level.IV)).level
        == assess(dataclasses.replace(inp, model_level=None)).level
    )


lexicon_terms = sorted(
    {
        t.replace("…", "")
        for f in RAW_RULES["red_flags"]
        for t in f.get("terms_zh", []) + f.get("terms_en", [])
    }
)


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.sampled_from([*lexicon_terms, "没有", "no", "，", "咳嗽", " "]), max_size=6),
    symptoms=st.lists(st.sampled_from(["胸痛", "发热", "咳嗽", "呼吸困难", "腹痛"]), max_size=3),
    pain=pains,
    age=ages,
    model_level=levels,
)
def test_self_service_never_gets_a_level(
    words: list[str], symptoms: list[str], pain: int | None, age: float | None, model_level: Level | None
) -> None:
    result = assess(
        UrgencyInput(
            channel="self_service",
            text="".join(words),
            symptoms=tuple(symptoms),
            pain_score=pain,
            age_years=age,
            model_level=model_level,
        )
    )
    assert result.level is None
    assert result.suggested_level is None
    assert result.response_minutes is None
    assert result.go_to_emergency_desk is (
        bool(result.red_flags)
        or (pain is not None and pain >= 7)
        or (model_level is not None and model_level <= 2)
    )
    if result.call_120:
        assert result.go_to_emergency_desk


# ---- re-assessment (TRI-04) ----------------------------------------------------------------------


def _waiting(
    text: str = "咳嗽", nurse_level: Level | None = None, **vitals: Any
) -> tuple[UrgencyInput, UrgencyResult]:
    inp = UrgencyInput(
        channel="nurse",
        text=text,
        age_years=50,
        vitals=VitalSigns(**with_vitals(**vitals)),
        nurse_level=nurse_level,
    )
    return inp, assess(inp)


def test_reassess_moves_up_one_level_on_deterioration_without_a_hard_threshold() -> None:
    inp, before = _waiting()
    assert before.level == Level.IV
    # SpO2 98→95 (NEWS2 +1) and T 36.7→38.2 (NEWS2 +1): no rule met, NEWS2 +2.
    after = reassess(before, inp, VitalSigns(**with_vitals(spo2=95, temperature=38.2)))
    assert assess(
        dataclasses.replace(inp, vitals=VitalSigns(**with_vitals(spo2=95, temperature=38.2)))
    ).level == (Level.IV)
    assert after.deteriorated
    assert after.level == Level.III
    assert "TRI04-DETERIORATION" in {r.rule_id for r in after.reasons}
    assert after.response_minutes == 30


def test_reassess_on_a_new_rule_and_on_oxygen() -> None:
    inp, before = _waiting(nurse_level=Level.III)
    newly_tachycardic = reassess(before, inp, VitalSigns(**with_vitals(heart_rate=105)))
    assert newly_tachycardic.deteriorated
    assert newly_tachycardic.level == Level.II  # Ⅲ moved up one
    inp, before = _waiting(on_oxygen=False)
    on_oxygen = reassess(before, inp, VitalSigns(**with_vitals(on_oxygen=True)))
    assert on_oxygen.deteriorated
    assert on_oxygen.level == Level.III


def test_reassess_gcs_fall() -> None:
    inp = UrgencyInput(channel="nurse", age_years=50, vitals=VitalSigns(heart_rate=80, gcs=15))
    before = assess(inp)
    after = reassess(before, inp, VitalSigns(heart_rate=80, gcs=13))
    assert after.deteriorated
    assert after.level == Level.II


def test_reassess_does_not_lower_the_level_by_itself() -> None:
    inp, before = _waiting(heart_rate=160)
    assert before.level == Level.II
    after = reassess(before, inp, VitalSigns(**with_vitals(heart_rate=88)))
    assert not after.deteriorated
    assert after.level == Level.II
    assert "REASSESS-NO-AUTO-DOWNGRADE" in {r.rule_id for r in after.reasons}


def test_reassess_does_not_count_a_first_measurement_as_a_trend() -> None:
    inp = UrgencyInput(channel="nurse", age_years=50, vitals=VitalSigns(heart_rate=80))
    before = assess(inp)
    after = reassess(before, inp, VitalSigns(heart_rate=80, systolic_bp=85))
    assert not after.deteriorated
    assert after.level == Level.III  # the new SBP rule, graded by the fresh assessment


def test_reassess_rejects_self_service() -> None:
    self_inp = UrgencyInput(channel="self_service", text="胸痛")
    with pytest.raises(ValueError, match="self-service"):
        reassess(assess(self_inp), self_inp, VitalSigns(heart_rate=80))


def test_reassess_after_a_first_visit_without_vitals_grades_afresh_with_the_old_floor() -> None:
    bare = UrgencyInput(channel="nurse", text="胸痛", age_years=50)
    before = assess(bare)
    assert before.level == Level.II
    calm = reassess(before, bare, VitalSigns(**NORMAL))
    assert not calm.deteriorated
    assert calm.level == Level.II
    fast = reassess(before, bare, VitalSigns(**with_vitals(heart_rate=185)))
    assert not fast.deteriorated  # no earlier value to compare: a first measurement, graded by the rules
    assert fast.level == Level.I
    assert reassess(before, bare, VitalSigns()).level == Level.II


@settings(max_examples=200, deadline=None)
@given(old=vital_signs, new=vital_signs, nurse_level=levels, age=ages)
def test_reassess_never_mutates_never_lowers_and_moves_up_on_deterioration(
    old: VitalSigns, new: VitalSigns, nurse_level: Level | None, age: float | None
) -> None:
    inp = UrgencyInput(channel="nurse", vitals=old, age_years=age, nurse_level=nurse_level)
    before = assess(inp)
    snapshot_result, snapshot_input = copy.deepcopy(before), copy.deepcopy(inp)
    after = reassess(before, inp, new)
    assert before == snapshot_result
    assert inp == snapshot_input
    assert after is not before
    assert before.level is not None
    assert after.level is not None
    assert after.level <= before.level
    fresh = assess(dataclasses.replace(inp, vitals=new))
    assert fresh.level is not None
    assert after.level <= fresh.level
    if after.deteriorated:
        assert after.level <= before.level.up_one()
