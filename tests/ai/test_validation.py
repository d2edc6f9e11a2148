"""Local validation metrics: hand-checked values, degenerate data, the bootstrap and the summary."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tianfu.ai import validation
from tianfu.ai.validation import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    ValidationSummary,
    bootstrap_ci,
    calibration_bins,
    confusion_matrix,
    expected_calibration_error,
    macro_ovr_auc,
    point_metrics,
    roc_auc,
    roc_curve,
    validate,
)
from tianfu.core.model_registry.manifest import ValidationData


def binary(
    y: list[int] | npt.NDArray[np.int64],
    p: list[float] | npt.NDArray[np.float64],
    threshold: float | None = None,
    extra: dict[str, float] | None = None,
) -> ValidationData:
    positive = np.asarray(p, dtype=np.float64)
    return ValidationData(
        kind="binary",
        classes=("negative", "positive"),
        y_true=np.asarray(y, dtype=np.int64),
        scores=np.column_stack([1 - positive, positive]),
        threshold=threshold,
        extra=extra or {},
    )


def synthetic_binary(n: int, seed: int = 0, separation: float = 1.0) -> ValidationData:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = rng.normal(separation * (2 * y - 1), 1.0)
    return binary(y, 1 / (1 + np.exp(-logit)))


def synthetic_multiclass(n: int, k: int = 4, seed: int = 0) -> ValidationData:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return ValidationData("multiclass", tuple(f"c{i}" for i in range(k)), y, probabilities)


def brute_force_auc(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> float:
    pos, neg = score[positive], score[~positive]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


# --- AUC -------------------------------------------------------------------------------------


def test_auc_with_a_tie_matches_the_hand_count() -> None:
    # Positives 0.8, 0.6, 0.4 against negatives 0.7, 0.4, 0.3:
    # 0.8 beats 3; 0.6 beats 2; 0.4 beats 1 and ties 1 (half a win) -> 6.5 of 9 pairs.
    assert roc_auc([1, 1, 1, 0, 0, 0], [0.8, 0.6, 0.4, 0.7, 0.4, 0.3]) == pytest.approx(6.5 / 9)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0.9, 0.8, 0.2, 0.1], 0.0),  # inverse
        ([0.5, 0.5, 0.5, 0.5], 0.5),  # all ties
    ],
)
def test_auc_known_cases(scores: list[float], expected: float) -> None:
    assert roc_auc([0, 0, 1, 1], scores) == pytest.approx(expected)


def test_auc_of_one_class_is_none() -> None:
    assert roc_auc([1, 1, 1], [0.1, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.1, 0.5]) is None
    assert roc_auc([], []) is None


def test_macro_auc_averages_one_vs_rest_over_present_classes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.5, 0.3, 0.2],
            [0.4, 0.5, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.2, 0.6],
            [0.1, 0.6, 0.3],
        ]
    )
    # class 0: positives 0.7, 0.5 vs 0.4, 0.6, 0.2, 0.1 -> (4 + 3) / 8
    # class 1: positives 0.5, 0.3 vs 0.2, 0.3, 0.2, 0.6 -> (3 + 2.5) / 8
    # class 2: positives 0.6, 0.3 vs 0.1, 0.2, 0.1, 0.1 -> 8 / 8
    expected = (7 / 8 + 5.5 / 8 + 1.0) / 3
    assert macro_ovr_auc(y, scores) == pytest.approx(expected)
    data = ValidationData("multiclass", ("a", "b", "c"), y, scores)
    assert point_metrics(data, ("auc",))["auc"] == pytest.approx(expected)


def test_macro_auc_skips_a_class_absent_from_the_labels() -> None:
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6]])
    # class 0: 0.8, 0.6 beat 0.3, 0.2 -> 1; class 1: 0.6 beats 0.1, 0.3 and 0.2 beats 0.1 -> 3/4
    assert macro_ovr_auc(y, scores) == pytest.approx((1 + 3 / 4) / 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=30).filter(
        lambda cases: len({positive for positive, _ in cases}) == 2
    )
)
def test_auc_equals_the_pairwise_count_with_ties(cases: list[tuple[bool, int]]) -> None:
    positive = np.array([p for p, _ in cases])
    score = np.array([s for _, s in cases], dtype=np.float64) / 5  # few values: many ties
    auc = roc_auc(positive, score)
    assert auc is not None
    assert 0.0 <= auc <= 1.0
    assert auc == pytest.approx(brute_force_auc(positive, score))
    negated = roc_auc(positive, -score)
    assert negated is not None
    assert auc + negated == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000))
def test_roc_curve_area_equals_auc(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.integers(0, 2, n).astype(bool)
    positive[:2] = [True, False]
    score = rng.integers(0, 6, n) / 5
    curve = roc_curve(positive, score)
    assert curve is not None
    assert (curve.fpr[0], curve.tpr[0]) == (0.0, 0.0)
    assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(curve.fpr) >= 0)
    assert np.all(np.diff(curve.tpr) >= 0)
    # The trapezoid under the curve counts a tie as half a win, as the midrank AUC does.
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(curve.auc)


# --- threshold metrics, confusion matrix, calibration ------------------------------------------


def test_sensitivity_specificity_ppv_npv_by_hand() -> None:
    # Threshold 0.5 (default, >=): flagged = 0.9, 0.6, 0.5 (positive), 0.7 (negative).
    data = binary([1, 1, 1, 1, 0, 0, 0, 0, 0], [0.9, 0.6, 0.5, 0.2, 0.7, 0.4, 0.3, 0.1, 0.0])
    metrics = point_metrics(data)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(4 / 5)
    assert metrics["ppv"] == pytest.approx(3 / 4)
    assert metrics["npv"] == pytest.approx(4 / 5)
    assert metrics["f1"] == pytest.approx(0.75)
    assert confusion_matrix(data) == ((4, 1), (1, 3))


def test_the_model_threshold_replaces_the_default() -> None:
    data = binary([1, 1, 0, 0], [0.9, 0.3, 0.25, 0.1], threshold=0.2)
    metrics = point_metrics(data)
    assert metrics["sensitivity"] == 1.0
    assert metrics["specificity"] == 0.5
    assert confusion_matrix(data) == ((1, 1), (0, 2))


def test_macro_f1_and_accuracy_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    scores = np.full((6, 3), 0.1)
    scores[np.arange(6), predicted] = 0.8
    data = ValidationData("multiclass", ("a", "b", "c"), y, scores)
    metrics = point_metrics(data)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # F1: class a 2*1/(2+2) = 0.5, class b 2*2/(2+3) = 0.8, class c 2*1/(2+1) = 2/3
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion_matrix(data) == ((1, 1, 0), (0, 2, 0), (1, 0, 1))


def test_one_class_data_gives_none_not_an_exception() -> None:
    data = binary([1, 1, 1, 1], [0.9, 0.4, 0.7, 0.6])
    metrics = point_metrics(data)
    assert metrics["auc"] is None
    assert metrics["specificity"] is None
    assert metrics["sensitivity"] == 0.75
    summary = validate(data, {"auc": 0.9, "specificity": 0.8}, n_boot=50)
    auc = summary.metric("auc")
    assert auc is not None
    assert (auc.value, auc.ci_low, auc.ci_high, auc.within_ci) == (None, None, None, None)
    assert auc.card_value == 0.9
    assert summary.roc == ()
    json.dumps(summary.to_json(), allow_nan=False)


def test_multiclass_with_one_class_present_has_no_auc() -> None:
    data = ValidationData("multiclass", ("a", "b", "c"), np.zeros(3, np.int64), np.full((3, 3), 1 / 3))
    assert point_metrics(data)["auc"] is None


def test_calibration_bins_count_every_case_and_ece_by_hand() -> None:
    data = binary([0, 1, 1, 1, 0], [0.05, 0.15, 0.95, 1.0, 0.55])
    bins = calibration_bins(data)
    assert len(bins) == 10
    assert sum(b.count for b in bins) == 5
    assert [b.count for b in bins] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[2].mean_predicted is None
    assert bins[2].observed is None
    assert bins[9].mean_predicted == pytest.approx(0.975)
    assert bins[9].observed == 1.0
    # |0.05-0| + |0.15-1| + |0.55-0| + 2*|0.975-1|, over 5 cases
    assert expected_calibration_error(data) == pytest.approx((0.05 + 0.85 + 0.55 + 0.05) / 5)


def test_multiclass_calibration_uses_top_class_confidence() -> None:
    data = synthetic_multiclass(300)
    assert sum(b.count for b in calibration_bins(data)) == 300
    assert all(b.low >= 0.2 for b in calibration_bins(data) if b.count)  # 4 classes: top share >= 1/4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_true": np.array([0, 2])}, "outside"),
        ({"scores": np.array([[0.5, np.nan], [0.5, 0.5]])}, "NaN"),
        ({"y_true": np.array([0])}, "cases"),
        ({"positive": 2}, "positive"),
    ],
)
def test_bad_data_is_refused(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"y_true": np.array([0, 1]), "scores": np.array([[0.5, 0.5], [0.2, 0.8]])}
    data = ValidationData("binary", ("n", "p"), **(fields | change))
    with pytest.raises(ValueError, match=message):
        point_metrics(data)


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_with_the_seed() -> None:
    data = synthetic_binary(200)
    first = bootstrap_ci(data, "auc", n_boot=200, seed=7)
    assert bootstrap_ci(data, "auc", n_boot=200, seed=7) == first
    assert bootstrap_ci(data, "auc", n_boot=200, seed=8) != first


@pytest.mark.parametrize("name", BINARY_METRICS)
def test_vectorised_bootstrap_matches_resampling_one_by_one(name: str) -> None:
    data = synthetic_binary(60, seed=3)
    slow = bootstrap_ci(data, lambda sample: point_metrics(sample, (name,))[name], n_boot=40, seed=5)
    assert bootstrap_ci(data, name, n_boot=40, seed=5) == pytest.approx(slow, rel=1e-12)


@pytest.mark.parametrize("name", [*MULTICLASS_METRICS, "quadratic_kappa"])
def test_vectorised_multiclass_bootstrap_matches_resampling_one_by_one(name: str) -> None:
    data = synthetic_multiclass(50, k=3, seed=4)
    slow = bootstrap_ci(data, lambda sample: point_metrics(sample, (name,))[name], n_boot=30, seed=1)
    assert bootstrap_ci(data, name, n_boot=30, seed=1) == pytest.approx(slow, rel=1e-12)


def test_ci_contains_the_estimate_and_narrows_with_more_cases() -> None:
    widths = []
    for n in (100, 2000):
        data = synthetic_binary(n, seed=n)
        for name in ("auc", "accuracy", "sensitivity"):
            value = point_metrics(data, (name,))[name]
            low, high = bootstrap_ci(data, name, n_boot=300)
            assert low is not None
            assert high is not None
            assert value is not None
            assert low <= value <= high
        low, high = bootstrap_ci(data, "auc", n_boot=300)
        assert low is not None
        assert high is not None
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(20) in theory


def test_unknown_metric_and_bad_arguments_are_refused() -> None:
    data = synthetic_binary(20)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(data, "macro_f1")
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(data, "auc", n_boot=0)


def test_validation_of_a_thousand_cases_is_fast() -> None:
    data = synthetic_binary(1000)
    validate(data, {}, n_boot=20)  # warm-up: imports and caches
    start = time.perf_counter()
    validate(data, {"auc": 0.8}, n_boot=1000)
    assert time.perf_counter() - start < 2.0


# --- the summary -----------------------------------------------------------------------------


def test_summary_compares_with_the_card() -> None:
    data = synthetic_binary(400, separation=1.0)
    measured = point_metrics(data, ("auc", "sensitivity"))
    card = {name: value for name, value in measured.items() if value is not None}
    card |= {"accuracy": 0.2, "unrelated": 3.0}
    summary = validate(data, card, n_boot=200)
    assert [m.name for m in summary.metrics] == list(BINARY_METRICS)
    by_name = {m.name: m for m in summary.metrics}
    assert by_name["auc"].within_ci is True
    assert by_name["accuracy"].within_ci is False
    assert by_name["specificity"].card_value is None
    assert by_name["specificity"].within_ci is None
    assert summary.card_mismatches == (by_name["accuracy"],)
    assert summary.n == 400
    assert sum(summary.class_counts) == 400
    assert sum(map(sum, summary.confusion)) == 400
    assert sum(b.count for b in summary.calibration) == 400
    assert summary.threshold == 0.5
    assert summary.positive == 1


def test_card_aliases_and_optional_metrics() -> None:
    summary = validate(synthetic_multiclass(120), {"auroc": 0.7, "quadratic_kappa": 0.5}, n_boot=50)
    auc = summary.metric("auc")
    assert auc is not None
    assert auc.card_value == 0.7
    assert summary.metric("quadratic_kappa") is not None
    assert validate(synthetic_multiclass(120), {}, n_boot=50).metric("quadratic_kappa") is None
    assert summary.threshold is None
    assert summary.positive is None
    assert len(summary.roc) == 4


def test_summary_json_round_trip_keeps_extra_numbers() -> None:
    data = binary([0, 1, 0, 1, 1], [0.2, 0.7, 0.4, 0.9, 0.3], threshold=0.35, extra={"turns": 4.5})
    summary = validate(data, {"auc": 0.9}, n_boot=100, seed=3)
    stored = json.loads(json.dumps(summary.to_json(), allow_nan=False))
    assert stored["extra"] == {"turns": 4.5}
    assert stored["threshold"] == 0.35
    assert ValidationSummary.from_json(stored) == summary


def test_grouped_bootstrap_draws_whole_groups_and_widens_the_interval() -> None:
    rng = np.random.default_rng(3)
    # 20 groups of 30 identical cases: 600 cases but only 20 independent units.
    group_truth = rng.integers(0, 2, size=20)
    group_score = np.clip(group_truth * 0.15 + rng.uniform(0.2, 0.7, size=20), 0, 1)
    y = np.repeat(group_truth, 30)
    p = np.repeat(group_score, 30)
    base = ValidationData(
        kind="binary", classes=("no", "yes"), y_true=y, scores=np.stack((1 - p, p), axis=1), positive=1
    )
    grouped = dataclasses.replace(base, groups=np.repeat(np.arange(20), 30))
    naive = validation.validate(base, {}, n_boot=300).metric("auc")
    clustered = validation.validate(grouped, {}, n_boot=300)
    auc = clustered.metric("auc")
    assert naive is not None
    assert auc is not None
    assert auc.value == naive.value  # the point estimate does not change
    assert (auc.ci_high - auc.ci_low) > 2 * (naive.ci_high - naive.ci_low)  # type: ignore[operator]
    assert clustered.resampled == "groups"
