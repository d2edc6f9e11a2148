"""Field performance: drift arithmetic, agreement series, and the summary over recorded outputs."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tianfu.ai import field
from tianfu.ai.field import VerdictCount
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service
from tianfu.core.model_outputs.models import ModelOutput
from tianfu.core.model_registry.manifest import FeatureReference

AGE = FeatureReference("age", fractions=(0.3, 0.4, 0.3), edges=(0.0, 40.0, 65.0, 120.0))
SEX = FeatureReference("sex", fractions=(0.5, 0.5), categories=("F", "M"))
SYMPTOMS = FeatureReference("symptoms", fractions=(0.5, 0.3, 0.2), categories=("cough", "fever", "headache"))

# --- PSI -------------------------------------------------------------------------------------------------


def test_psi_is_zero_when_the_distribution_matches_the_reference() -> None:
    ages = [20.0] * 60 + [50.0] * 80 + [90.0] * 60
    assert field.population_stability_index(AGE, ages) == pytest.approx(0.0, abs=1e-12)
    assert field.population_stability_index(SEX, ["F", "M"] * 100) == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_the_shift() -> None:
    reference = FeatureReference("x", fractions=(0.25, 0.25, 0.25, 0.25), edges=(-2.0, -0.67, 0.0, 0.67, 2.0))
    rng = np.random.default_rng(7)
    sample = rng.normal(size=5000)
    psis = [
        field.psi_of(reference, field.recent_distribution(reference, list(sample + s)))
        for s in (0, 0.3, 0.5, 0.8)
    ]
    assert psis[0] < 0.01 < psis[1] < psis[2] < psis[3]
    assert [field.drift_level(p) for p in psis] == ["stable", "stable", "moderate", "major"]


def test_psi_of_a_hand_example() -> None:
    reference = FeatureReference("x", fractions=(0.5, 0.5), edges=(0.0, 1.0, 2.0))
    # 20 of 30 in the first bin (two of them below the edges), 10 in the last (one above them).
    values = [0.5] * 18 + [-3.0] * 2 + [1.5] * 9 + [7.0]
    expected = (2 / 3 - 1 / 2) * math.log(4 / 3) + (1 / 3 - 1 / 2) * math.log(2 / 3)
    assert field.population_stability_index(reference, values, min_values=1) == pytest.approx(expected)
    assert expected == pytest.approx(0.115525, abs=1e-6)


def test_categorical_psi_counts_unknown_categories_against_an_epsilon_share() -> None:
    values = ["F"] * 15 + ["M"] * 10 + ["unknown"] * 5
    recent = field.recent_distribution(SEX, values)
    assert recent.fractions == pytest.approx((0.5, 1 / 3))
    assert recent.other == pytest.approx(1 / 6)
    eps = field.PSI_EPSILON
    expected = (1 / 3 - 1 / 2) * math.log(2 / 3) + (1 / 6 - eps) * math.log((1 / 6) / eps)
    assert field.population_stability_index(SEX, values, min_values=1) == pytest.approx(expected)
    assert field.drift_level(expected) == "major"


def test_list_valued_inputs_count_each_element() -> None:
    values: list[Any] = [["cough", "fever"]] * 10 + [["cough"]] * 10 + [["headache", "cough"]] * 5 + [[]]
    recent = field.recent_distribution(SYMPTOMS, values)
    assert recent.n == 40
    assert recent.fractions == pytest.approx((25 / 40, 10 / 40, 5 / 40))
    flat = ["cough"] * 25 + ["fever"] * 10 + ["headache"] * 5
    assert field.population_stability_index(SYMPTOMS, values, min_values=1) == pytest.approx(
        field.population_stability_index(SYMPTOMS, flat, min_values=1)
    )


def test_psi_is_none_below_the_minimum_count() -> None:
    enough = field.MIN_VALUES_FOR_PSI
    assert field.population_stability_index(AGE, [50.0] * (enough - 1)) is None
    assert field.population_stability_index(AGE, [50.0] * (enough - 1) + [None, "n/a"]) is None  # not numbers
    assert field.population_stability_index(AGE, [50.0] * enough) is not None
    assert field.population_stability_index(AGE, [50.0] * 5, min_values=5) is not None


def test_a_malformed_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="edge"):
        field.population_stability_index(FeatureReference("x", fractions=(0.5, 0.5), edges=(0.0, 1.0)), [1.0])


def test_drift_levels() -> None:
    assert [field.drift_level(p) for p in (0.0, 0.099, 0.1, 0.25, 0.26)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "major",
    ]


def test_wilson_interval() -> None:
    assert field.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert field.wilson_interval(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)
    assert field.wilson_interval(0, 0) is None


def test_agreement_series_fills_gaps_and_groups_weeks() -> None:
    counts = [
        VerdictCount(date(2025, 3, 1), "1", "agree", 2),
        VerdictCount(date(2025, 3, 1), "1", "partial", 1),
        VerdictCount(date(2025, 3, 1), "2", None, 3),
        VerdictCount(date(2025, 3, 3), "2", "disagree", 1),
    ]
    days = field.agreement_series(counts, first_day=date(2025, 3, 1), last_day=date(2025, 3, 3))
    assert [(p.start.day, p.outputs, p.reviewed, p.agreement_rate) for p in days] == [
        (1, 6, 3, pytest.approx(2.5 / 3)),
        (2, 0, 0, None),
        (3, 1, 1, 0.0),
    ]
    assert days[0].by_version == {"1": 3, "2": 3}
    first, last = date(2025, 3, 1), date(2025, 3, 3)
    weeks = field.agreement_series(counts, first_day=first, last_day=last, bucket="week")
    assert [(p.start, p.outputs) for p in weeks] == [(date(2025, 2, 24), 6), (date(2025, 3, 3), 1)]


# --- the summary over recorded outputs ------------------------------------------------------------------

MODEL = "field-test-model"
SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 3, 4, tzinfo=UTC)


class Recorder:
    def __init__(self, kernel: Kernel, db: Session, demo: Demo) -> None:
        self.kernel, self.db = kernel, db
        self.patient_id = demo.patient("李建国").id
        self.doctor = principal(db, "dr.zhang").actor
        self.verdicts: dict[str, int] = {}

    def output(
        self, at: datetime, version: str, age: float = 80.0, sex: str = "F", model: str = MODEL
    ) -> ModelOutput:
        row = service.record_output(
            self.db,
            self.kernel.audit,
            actor=self.doctor,
            module="triage",
            task="department",
            model_name=model,
            model_version=version,
            input_ref="TriageSession/x",
            output={"department": "cardiology"},
            label="cardiology",
            score=0.7,
            patient_id=self.patient_id,
            input_features={"age": age, "sex": sex},
        )
        row.created_at = at
        self.db.flush()
        return row

    def feedback(
        self, output: ModelOutput, verdict: service.Verdict, corrected_label: str = "", comment: str = ""
    ) -> None:
        row = service.record_feedback(
            self.db,
            self.kernel.audit,
            actor=self.doctor,
            output=output,
            verdict=verdict,
            corrected_label=corrected_label,
            comment=comment,
        )
        # Explicit times, one minute apart per output, so that "latest wins" does not hang on the clock.
        self.verdicts[output.id] = self.verdicts.get(output.id, 0) + 1
        row.created_at = output.created_at + timedelta(minutes=self.verdicts[output.id])
        self.db.flush()


@pytest.fixture
def recorded(kernel: Kernel, db: Session, demo: Demo) -> dict[str, ModelOutput]:
    """36 outputs over three days: v1 on days 1-2, v2 on days 2-3, with feedback on days 1-2."""
    rec = Recorder(kernel, db, demo)
    day1 = [rec.output(SINCE + timedelta(hours=i), "1.0.0", sex="FM"[i % 2]) for i in range(12)]
    day2 = SINCE + timedelta(days=1)
    day2_v1 = [rec.output(day2 + timedelta(hours=i), "1.0.0", sex="FM"[i % 2]) for i in range(6)]
    day2_v2 = [rec.output(day2 + timedelta(hours=10 + i), "2.0.0", sex="FM"[i % 2]) for i in range(6)]
    for i in range(12):
        rec.output(SINCE + timedelta(days=2, hours=i), "2.0.0", sex="FM"[i % 2])
    # Outside the window or another model: never counted.
    rec.output(SINCE - timedelta(seconds=1), "1.0.0")
    rec.output(UNTIL, "2.0.0")
    other = rec.output(SINCE + timedelta(hours=5), "1.0.0", model="another-model")
    rec.feedback(other, "disagree", comment="not ours")

    rec.feedback(day1[0], "agree")
    rec.feedback(day1[1], "agree")
    rec.feedback(day1[2], "partial", comment="borderline")
    rec.feedback(day1[3], "disagree", corrected_label="respiratory")
    rec.feedback(day2_v1[0], "disagree", corrected_label="neurology")
    rec.feedback(day2_v1[0], "agree")  # the later verdict replaces the disagreement
    rec.feedback(day2_v2[0], "agree")
    rec.feedback(day2_v2[0], "disagree", comment="missed the chest pain")
    db.commit()
    return {"partial": day1[2], "disagree": day1[3], "changed_mind": day2_v2[0]}


def test_volume_agreement_and_series(db: Session, recorded: dict[str, ModelOutput]) -> None:
    summary = field.field_summary(
        db, MODEL, since=SINCE, until=UNTIL, reference=[AGE, SEX], min_drift_values=30
    )
    assert [(v.version, v.outputs, v.reviewed, v.agreed) for v in summary.versions] == [
        ("1.0.0", 18, 5, 3.5),
        ("2.0.0", 18, 1, 0.0),
    ]
    assert (summary.outputs, summary.reviewed) == (36, 6)
    assert summary.agreement_rate == pytest.approx(3.5 / 6)
    interval = summary.agreement_interval
    assert interval is not None
    assert interval[0] < 3.5 / 6 < interval[1]
    assert [(p.start.day, p.outputs, p.reviewed, p.agreement_rate) for p in summary.series] == [
        (1, 12, 4, pytest.approx(2.5 / 4)),
        (2, 12, 2, pytest.approx(0.5)),
        (3, 12, 0, None),
    ]
    assert summary.series[1].by_version == {"1.0.0": 6, "2.0.0": 6}

    weekly = field.field_summary(db, MODEL, since=SINCE, until=UNTIL, reference=[], bucket="week")
    assert [(p.start, p.outputs) for p in weekly.series] == [(date(2025, 2, 24), 24), (date(2025, 3, 3), 12)]
    assert weekly.drift == ()


def test_disagreement_cases_most_recent_first(db: Session, recorded: dict[str, ModelOutput]) -> None:
    summary = field.field_summary(db, MODEL, since=SINCE, until=UNTIL, reference=[])
    cases = summary.disagreements
    assert [c.output_id for c in cases] == [
        recorded["changed_mind"].id,
        recorded["disagree"].id,
        recorded["partial"].id,
    ]
    first = cases[0]
    assert (first.version, first.verdict, first.comment, first.label) == (
        "2.0.0",
        "disagree",
        "missed the chest pain",
        "cardiology",
    )
    assert first.created_at == SINCE + timedelta(days=1, hours=10)
    assert first.patient_id == recorded["changed_mind"].patient_id
    assert cases[1].corrected_label == "respiratory"


def test_drift_per_reference_feature(db: Session, recorded: dict[str, ModelOutput]) -> None:
    summary = field.field_summary(
        db, MODEL, since=SINCE, until=UNTIL, reference=[AGE, SEX, SYMPTOMS], min_drift_values=30
    )
    drift = {d.name: d for d in summary.drift}
    assert drift["age"].n == 36
    assert drift["age"].level == "major"  # everyone in the window is 80, training was mostly younger
    assert drift["age"].recent.fractions == (0.0, 0.0, 1.0)
    assert drift["sex"].psi == pytest.approx(0.0, abs=1e-12)
    assert drift["sex"].level == "stable"
    assert (drift["symptoms"].n, drift["symptoms"].psi, drift["symptoms"].level) == (0, None, None)
    assert (summary.drift_rows, summary.drift_capped) == (36, False)

    data = json.loads(json.dumps(summary.to_json()))
    assert data["outputs"] == 36
    assert data["drift"][0]["recent"] == [0.0, 0.0, 1.0]
    assert data["drift"][0]["reference"] == [0.3, 0.4, 0.3]
    assert len(data["disagreements"]) == 3


def test_alerts_fire_at_their_thresholds(db: Session, recorded: dict[str, ModelOutput]) -> None:
    summary = field.field_summary(
        db, MODEL, since=SINCE, until=UNTIL, reference=[AGE, SEX], min_drift_values=30
    )

    found = field.alerts(summary, min_agreement=0.7, max_psi=0.25, min_reviewed=6)
    assert [(a.kind, a.feature) for a in found] == [("agreement", ""), ("drift", "age")]
    agreement = found[0]
    assert (agreement.value, agreement.threshold) == pytest.approx((3.5 / 6, 0.7))
    assert agreement.message % agreement.variables == (
        "Clinicians agreed with 58% of 6 reviewed outputs, below the target of 70%."
    )

    # Too few verdicts to judge, or agreement at the target: no agreement alert.
    few_verdicts = field.alerts(summary, min_agreement=0.7, max_psi=0.25, min_reviewed=7)
    at_target = field.alerts(summary, min_agreement=3.5 / 6, max_psi=0.25, min_reviewed=6)
    assert [a.kind for a in few_verdicts] == [a.kind for a in at_target] == ["drift"]
    # A PSI limit above the age drift: quiet.
    age_psi = next(d.psi for d in summary.drift if d.name == "age")
    assert age_psi is not None
    assert field.alerts(summary, min_agreement=0.5, max_psi=age_psi, min_reviewed=1) == []


def test_naive_or_empty_windows_are_refused(db: Session) -> None:
    with pytest.raises(ValueError, match="timezone"):
        field.field_summary(db, MODEL, since=datetime(2025, 3, 1), until=UNTIL, reference=[])  # noqa: DTZ001
    with pytest.raises(ValueError, match="after"):
        field.field_summary(db, MODEL, since=UNTIL, until=SINCE, reference=[])
