"""Local validation (本地验证): a model's metrics on a hospital's own labelled data, against its card.

Pure numpy, no I/O. Every metric is computed as a *weighted* statistic over the cases: the point
estimate uses weight 1 per case, and a bootstrap replicate uses how often each case was drawn. One
code path therefore serves both, and a thousand replicates become a few matrix products instead of
a thousand Python loops.

Definitions follow ``tianfu.imaging.evaluate`` so that local numbers compare with the model cards:
AUC is Mann-Whitney with midranks for ties; ``accuracy`` is argmax accuracy; sensitivity and
friends count a case positive when its positive-class probability is ``>= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tianfu.core.model_registry.manifest import TaskKind, ValidationData

F64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_THRESHOLD = 0.5
CALIBRATION_BINS = 10
MAX_ROC_POINTS = 512  # enough to draw a curve; keeps the stored JSON small for large datasets
_BOOTSTRAP_CELLS = 4_000_000  # resampling weights held in memory at once (rows x cases)

BINARY_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "brier", "ece")
MULTICLASS_METRICS = ("auc", "accuracy", "macro_f1", "brier", "ece")
# Only meaningful on an ordinal scale (DR grades), so computed only when the card reports it.
OPTIONAL_MULTICLASS_METRICS = ("quadratic_kappa",)

# Other spellings of our metric names that model cards use.
CARD_ALIASES: Mapping[str, tuple[str, ...]] = {
    "auc": ("auroc", "roc_auc"),
    "sensitivity": ("recall", "tpr"),
    "specificity": ("tnr",),
    "ppv": ("precision",),
    "macro_f1": ("f1_macro",),
    "ece": ("expected_calibration_error",),
}


# ---------------------------------------------------------------------------------------------
# Input checks


def check_data(data: ValidationData) -> None:
    """Raise ``ValueError`` when ``data`` cannot be validated (shapes, labels, non-finite scores)."""
    y_true = np.asarray(data.y_true)
    scores = np.asarray(data.scores)
    if y_true.ndim != 1 or scores.ndim != 2:
        raise ValueError(f"y_true must be (N,) and scores (N, K); got {y_true.shape} and {scores.shape}")
    n, k = scores.shape
    if len(y_true) != n:
        raise ValueError(f"y_true has {len(y_true)} cases but scores has {n}")
    if n == 0:
        raise ValueError("no cases to validate on")
    if k != len(data.classes):
        raise ValueError(f"scores has {k} columns but there are {len(data.classes)} classes")
    if data.kind == "binary" and k != 2:
        raise ValueError(f"a binary task needs 2 classes, got {k}")
    if data.kind == "multiclass" and k < 2:
        raise ValueError("a multiclass task needs at least 2 classes")
    if not 0 <= data.positive < k:
        raise ValueError(f"positive class index {data.positive} out of range for {k} classes")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError("y_true must hold integer class indices")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true holds class indices outside 0..{k - 1}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if data.threshold is not None and not math.isfinite(data.threshold):
        raise ValueError("threshold must be finite")


def threshold_of(data: ValidationData) -> float:
    return DEFAULT_THRESHOLD if data.threshold is None else float(data.threshold)


# ---------------------------------------------------------------------------------------------
# Weighted statistics: ``weights`` is (B, N); each returns (B,) with NaN where undefined.


def _ratio(numerator: F64Array, denominator: F64Array) -> F64Array:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass(frozen=True)
class _RankedScores:
    """Cases sorted by one score, ties grouped, for the weighted Mann-Whitney AUC."""

    order: npt.NDArray[np.intp]
    group_starts: npt.NDArray[np.intp]
    positive_sorted: F64Array

    @classmethod
    def of(cls, positive: BoolArray, score: F64Array) -> _RankedScores:
        order = np.argsort(score, kind="stable")
        sorted_score = score[order]
        new_value = np.empty(len(score), dtype=bool)
        new_value[0] = True
        new_value[1:] = sorted_score[1:] != sorted_score[:-1]
        return cls(order, np.flatnonzero(new_value), positive[order].astype(np.float64))

    def auc(self, weights: F64Array) -> F64Array:
        """P(score_pos > score_neg) + 0.5 P(tie): the midrank Mann-Whitney statistic, weighted."""
        sorted_weights = weights[:, self.order]
        pos = np.add.reduceat(sorted_weights * self.positive_sorted, self.group_starts, axis=1)
        neg = np.add.reduceat(sorted_weights * (1.0 - self.positive_sorted), self.group_starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        return _ratio(wins, pos.sum(axis=1) * neg.sum(axis=1))


class _Cases:
    """Per-case quantities of one dataset that the weighted metrics need, computed once."""

    def __init__(self, data: ValidationData) -> None:
        check_data(data)
        self.kind: TaskKind = data.kind
        self.y_true = np.asarray(data.y_true, dtype=np.int64)
        self.scores = np.asarray(data.scores, dtype=np.float64)
        self.n, self.k = self.scores.shape
        self.positive = data.positive
        self.threshold = threshold_of(data)
        self.truth = np.eye(self.k)[self.y_true]  # one-hot (N, K)
        self.predicted = self.scores.argmax(axis=1)
        self.prediction = np.eye(self.k)[self.predicted]
        self.correct = (self.predicted == self.y_true).astype(np.float64)
        self.is_positive = self.y_true == self.positive
        self.flagged = self.scores[:, self.positive] >= self.threshold
        self._ranked: dict[int, _RankedScores] = {}

    def ranked(self, column: int) -> _RankedScores:
        if column not in self._ranked:
            self._ranked[column] = _RankedScores.of(self.y_true == column, self.scores[:, column])
        return self._ranked[column]

    def calibration_inputs(self) -> tuple[F64Array, F64Array]:
        """(predicted probability, observed outcome) per case that calibration is measured on."""
        if self.kind == "binary":
            return self.scores[:, self.positive], self.is_positive.astype(np.float64)
        return self.scores.max(axis=1), self.correct

    # -- the metrics ---------------------------------------------------------------------------

    def auc(self, w: F64Array) -> F64Array:
        if self.kind == "binary":
            return self.ranked(self.positive).auc(w)
        per_class = np.stack([self.ranked(c).auc(w) for c in range(self.k)], axis=1)
        return _nanmean_rows(per_class)  # classes absent from a sample are skipped

    def accuracy(self, w: F64Array) -> F64Array:
        return _ratio(w @ self.correct, w.sum(axis=1))

    def _counts(self, w: F64Array) -> tuple[F64Array, F64Array, F64Array, F64Array]:
        """Weighted true/false positives/negatives at the threshold."""
        tp = w @ (self.flagged & self.is_positive).astype(np.float64)
        fp = w @ (self.flagged & ~self.is_positive).astype(np.float64)
        fn = w @ (~self.flagged & self.is_positive).astype(np.float64)
        tn = w @ (~self.flagged & ~self.is_positive).astype(np.float64)
        return tp, fp, fn, tn

    def sensitivity(self, w: F64Array) -> F64Array:
        tp, _, fn, _ = self._counts(w)
        return _ratio(tp, tp + fn)

    def specificity(self, w: F64Array) -> F64Array:
        _, fp, _, tn = self._counts(w)
        return _ratio(tn, tn + fp)

    def ppv(self, w: F64Array) -> F64Array:
        tp, fp, _, _ = self._counts(w)
        return _ratio(tp, tp + fp)

    def npv(self, w: F64Array) -> F64Array:
        _, _, fn, tn = self._counts(w)
        return _ratio(tn, tn + fn)

    def f1(self, w: F64Array) -> F64Array:
        tp, fp, fn, _ = self._counts(w)
        return _ratio(2 * tp, 2 * tp + fp + fn)

    def macro_f1(self, w: F64Array) -> F64Array:
        tp = w @ (self.truth * self.prediction)
        f1 = _ratio(2 * tp, w @ self.truth + w @ self.prediction)
        return _nanmean_rows(f1)  # over classes that occur in the truth or the predictions

    def brier(self, w: F64Array) -> F64Array:
        if self.kind == "binary":
            loss = (self.scores[:, self.positive] - self.is_positive) ** 2
        else:
            loss = ((self.scores - self.truth) ** 2).sum(axis=1)
        return _ratio(w @ loss, w.sum(axis=1))

    def ece(self, w: F64Array) -> F64Array:
        predicted, observed = self.calibration_inputs()
        bins = np.eye(CALIBRATION_BINS)[_bin_index(predicted)]
        gap = w @ (bins * predicted[:, None]) - w @ (bins * observed[:, None])
        return _ratio(np.abs(gap).sum(axis=1), w.sum(axis=1))

    def quadratic_kappa(self, w: F64Array) -> F64Array:
        observed = (w @ (self.truth[:, :, None] * self.prediction[:, None, :]).reshape(self.n, -1)).reshape(
            -1, self.k, self.k
        )
        total = observed.sum(axis=(1, 2))[:, None, None]  # > 0: every replicate has n cases
        expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :] / total
        grid = np.arange(self.k)
        penalty = (grid[:, None] - grid[None, :]) ** 2 / (self.k - 1) ** 2
        return 1.0 - _ratio((penalty * observed).sum(axis=(1, 2)), (penalty * expected).sum(axis=(1, 2)))


def _nanmean_rows(values: F64Array) -> F64Array:
    defined = ~np.isnan(values)
    return _ratio(np.where(defined, values, 0.0).sum(axis=1), defined.sum(axis=1).astype(np.float64))


def _bin_index(probability: F64Array) -> npt.NDArray[np.intp]:
    """Equal-width bins on [0, 1]; 1.0 falls in the last bin, out-of-range scores in the end bins."""
    return np.clip(np.floor(probability * CALIBRATION_BINS), 0, CALIBRATION_BINS - 1).astype(np.intp)


_WeightedMetric = Callable[[_Cases, F64Array], F64Array]
_WEIGHTED: Mapping[str, _WeightedMetric] = {
    "auc": _Cases.auc,
    "accuracy": _Cases.accuracy,
    "sensitivity": _Cases.sensitivity,
    "specificity": _Cases.specificity,
    "ppv": _Cases.ppv,
    "npv": _Cases.npv,
    "f1": _Cases.f1,
    "macro_f1": _Cases.macro_f1,
    "brier": _Cases.brier,
    "ece": _Cases.ece,
    "quadratic_kappa": _Cases.quadratic_kappa,
}


def metric_names(kind: TaskKind, card_keys: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The metrics validation reports for a task of ``kind`` (plus optional ones the card has)."""
    if kind == "binary":
        return BINARY_METRICS
    optional = tuple(name for name in OPTIONAL_MULTICLASS_METRICS if card_keys and name in card_keys)
    return MULTICLASS_METRICS + optional


def _check_metric(name: str, kind: TaskKind) -> _WeightedMetric:
    allowed = BINARY_METRICS if kind == "binary" else MULTICLASS_METRICS + OPTIONAL_MULTICLASS_METRICS
    if name not in allowed:
        raise ValueError(f"unknown metric {name!r} for a {kind} task; known: {', '.join(allowed)}")
    return _WEIGHTED[name]


def _as_optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# ---------------------------------------------------------------------------------------------
# Point estimates


def roc_auc(positive: npt.ArrayLike, score: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, midranks for ties); None if a class is absent."""
    is_positive = np.asarray(positive, dtype=bool).ravel()
    values = np.asarray(score, dtype=np.float64).ravel()
    if len(values) == 0:
        return None
    ranked = _RankedScores.of(is_positive, values)
    return _as_optional(ranked.auc(np.ones((1, len(values))))[0])


def macro_ovr_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Mean one-vs-rest AUC over the classes present in ``y_true``; None with fewer than two."""
    labels = np.asarray(y_true, dtype=np.int64).ravel()
    probabilities = np.asarray(scores, dtype=np.float64)
    aucs = [roc_auc(labels == c, probabilities[:, c]) for c in range(probabilities.shape[1])]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def point_metrics(data: ValidationData, names: tuple[str, ...] | None = None) -> dict[str, float | None]:
    """Each metric of ``data`` (default: all for its kind); None where undefined (e.g. no positives)."""
    cases = _Cases(data)
    chosen = metric_names(data.kind) if names is None else names
    ones = np.ones((1, cases.n))
    return {name: _as_optional(_check_metric(name, data.kind)(cases, ones)[0]) for name in chosen}


def confusion_matrix(data: ValidationData) -> tuple[tuple[int, ...], ...]:
    """Counts, rows = true class, columns = predicted class (binary: at the threshold; else argmax)."""
    cases = _Cases(data)
    if data.kind == "binary":
        other = 1 - cases.positive
        predicted = np.where(cases.flagged, cases.positive, other)
    else:
        predicted = cases.predicted
    matrix = np.zeros((cases.k, cases.k), dtype=np.int64)
    np.add.at(matrix, (cases.y_true, predicted), 1)
    return tuple(tuple(int(v) for v in row) for row in matrix)


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve: false/true positive rates from the strictest threshold to the loosest."""

    label: str  # the class scored as positive (one-vs-rest for multiclass)
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: float | None


def roc_curve(positive: npt.ArrayLike, score: npt.ArrayLike, label: str = "") -> RocCurve | None:
    """ROC points at every distinct score (thinned to ``MAX_ROC_POINTS``); None if a class is absent."""
    is_positive = np.asarray(positive, dtype=bool).ravel()
    values = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(is_positive.sum())
    n_neg = len(values) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    hits = is_positive[order]
    # One point per distinct score: the last case of each run of ties.
    last_of_value = np.r_[np.flatnonzero(sorted_values[1:] != sorted_values[:-1]), len(values) - 1]
    tpr = np.r_[0.0, np.cumsum(hits)[last_of_value] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~hits)[last_of_value] / n_neg]
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(np.intp))
        fpr, tpr = fpr[keep], tpr[keep]
    return RocCurve(
        label=label,
        fpr=tuple(float(v) for v in fpr),
        tpr=tuple(float(v) for v in tpr),
        auc=roc_auc(is_positive, values),
    )


def roc_curves(data: ValidationData) -> tuple[RocCurve, ...]:
    """The positive class's curve (binary) or one-vs-rest curves of the classes present (multiclass)."""
    check_data(data)
    columns = [data.positive] if data.kind == "binary" else range(len(data.classes))
    curves = (roc_curve(data.y_true == c, data.scores[:, c], data.classes[c]) for c in columns)
    return tuple(curve for curve in curves if curve is not None)


@dataclass(frozen=True)
class CalibrationBin:
    """One reliability-diagram bin: cases whose predicted probability lies in [low, high)."""

    low: float
    high: float
    count: int
    mean_predicted: float | None  # None for an empty bin
    observed: float | None  # observed frequency of the outcome


def calibration_bins(data: ValidationData) -> tuple[CalibrationBin, ...]:
    """Ten equal-width bins of the positive-class probability (binary) or top-class confidence."""
    predicted, observed = _Cases(data).calibration_inputs()
    index = _bin_index(predicted)
    counts = np.bincount(index, minlength=CALIBRATION_BINS)
    predicted_sums = np.bincount(index, weights=predicted, minlength=CALIBRATION_BINS)
    observed_sums = np.bincount(index, weights=observed, minlength=CALIBRATION_BINS)
    return tuple(
        CalibrationBin(
            low=b / CALIBRATION_BINS,
            high=(b + 1) / CALIBRATION_BINS,
            count=int(counts[b]),
            mean_predicted=float(predicted_sums[b] / counts[b]) if counts[b] else None,
            observed=float(observed_sums[b] / counts[b]) if counts[b] else None,
        )
        for b in range(CALIBRATION_BINS)
    )


def expected_calibration_error(data: ValidationData) -> float:
    """Case-weighted mean gap between predicted probability and observed frequency over the bins."""
    value = point_metrics(data, ("ece",))["ece"]
    assert value is not None  # defined whenever there is at least one case
    return value


# ---------------------------------------------------------------------------------------------
# Bootstrap


def _resamples(n: int, n_boot: int, seed: int) -> Iterator[npt.NDArray[np.intp]]:
    """Bootstrap case indices (rows x n), in blocks small enough to hold as dense weights."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _BOOTSTRAP_CELLS // n))
    for start in range(0, n_boot, block):
        yield rng.integers(0, n, size=(min(block, n_boot - start), n))


def _weights(indices: npt.NDArray[np.intp], n: int) -> F64Array:
    """How often each case was drawn, per replicate: (rows, n)."""
    rows = len(indices)
    flat = (indices + (np.arange(rows) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _group_index(groups: npt.ArrayLike | None, n: int) -> npt.NDArray[np.int64] | None:
    """Group labels as 0..G-1 per case, or None."""
    if groups is None:
        return None
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must give one label per case ({n}), got shape {labels.shape}")
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _interval(replicates: F64Array, alpha: float) -> tuple[float | None, float | None]:
    defined = replicates[~np.isnan(replicates)]
    if len(defined) == 0:
        return None, None
    low, high = np.percentile(defined, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _bootstrap_replicates(
    cases: _Cases,
    names: tuple[str, ...],
    n_boot: int,
    seed: int,
    groups: npt.NDArray[np.int64] | None = None,
) -> dict[str, F64Array]:
    """Replicates of each metric; with ``groups``, whole groups are drawn (correlated cases stay together)."""
    metrics = {name: _check_metric(name, cases.kind) for name in names}
    blocks: dict[str, list[F64Array]] = {name: [] for name in names}
    units = cases.n if groups is None else int(groups.max()) + 1
    for indices in _resamples(units, n_boot, seed):
        drawn = _weights(indices, units)
        weights = drawn if groups is None else drawn[:, groups]
        for name, metric in metrics.items():
            blocks[name].append(metric(cases, weights))
    return {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in blocks.items()}


def bootstrap_ci(
    data: ValidationData,
    metric: str | Callable[[ValidationData], float | None],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float | None, float | None]:
    """Percentile ``1 - alpha`` confidence interval of ``metric`` by resampling cases.

    ``metric`` is a metric name (fast, vectorised) or any function of a ``ValidationData`` (called
    once per replicate). Replicates where the metric is undefined (e.g. no positives drawn) are
    left out; (None, None) if it is never defined. The same ``seed`` gives the same interval.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if isinstance(metric, str):
        cases = _Cases(data)
        return _interval(_bootstrap_replicates(cases, (metric,), n_boot, seed)[metric], alpha)
    check_data(data)
    y_true, scores = np.asarray(data.y_true), np.asarray(data.scores)
    values: list[float] = []
    for indices in _resamples(len(y_true), n_boot, seed):
        for row in indices:
            value = metric(replace(data, y_true=y_true[row], scores=scores[row]))
            values.append(math.nan if value is None else float(value))
    return _interval(np.asarray(values, dtype=np.float64), alpha)


# ---------------------------------------------------------------------------------------------
# The summary


@dataclass(frozen=True)
class MetricResult:
    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    card_value: float | None = None  # the model card's number for the same metric, if it has one
    within_ci: bool | None = None  # card value inside the local CI; None when there is nothing to compare


@dataclass(frozen=True)
class ValidationSummary:
    kind: TaskKind
    classes: tuple[str, ...]
    n: int
    class_counts: tuple[int, ...]  # per class, in the order of ``classes``
    positive: int | None  # the screened-for class of a binary task
    threshold: float | None  # the operating point used (binary tasks)
    metrics: tuple[MetricResult, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows = true class, columns = predicted
    roc: tuple[RocCurve, ...]
    calibration: tuple[CalibrationBin, ...]
    ece: float
    calibration_target: str  # what the calibration bins measure, in English
    n_boot: int
    seed: int
    alpha: float
    extra: Mapping[str, float] = field(default_factory=dict)
    resampled: str = "cases"  # or "groups": whole groups of correlated cases were drawn

    def metric(self, name: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def card_mismatches(self) -> tuple[MetricResult, ...]:
        """Metrics whose card value lies outside the local confidence interval."""
        return tuple(m for m in self.metrics if m.within_ci is False)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (NaN and infinity become None), for the registry tables."""
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "n": self.n,
            "class_counts": list(self.class_counts),
            "positive": self.positive,
            "threshold": self.threshold,
            "metrics": [
                {
                    "name": m.name,
                    "value": _json_float(m.value),
                    "ci_low": _json_float(m.ci_low),
                    "ci_high": _json_float(m.ci_high),
                    "card_value": _json_float(m.card_value),
                    "within_ci": m.within_ci,
                }
                for m in self.metrics
            ],
            "confusion": [list(row) for row in self.confusion],
            "roc": [
                {"label": r.label, "fpr": list(r.fpr), "tpr": list(r.tpr), "auc": _json_float(r.auc)}
                for r in self.roc
            ],
            "calibration": [
                {
                    "low": b.low,
                    "high": b.high,
                    "count": b.count,
                    "mean_predicted": b.mean_predicted,
                    "observed": b.observed,
                }
                for b in self.calibration
            ],
            "ece": _json_float(self.ece),
            "calibration_target": self.calibration_target,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "alpha": self.alpha,
            "extra": {key: _json_float(value) for key, value in self.extra.items()},
            "resampled": self.resampled,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValidationSummary:
        """The inverse of :meth:`to_json`, to render a stored validation again."""
        return cls(
            kind=data["kind"],
            classes=tuple(data["classes"]),
            n=int(data["n"]),
            class_counts=tuple(int(c) for c in data["class_counts"]),
            positive=data["positive"],
            threshold=data["threshold"],
            metrics=tuple(MetricResult(**m) for m in data["metrics"]),
            confusion=tuple(tuple(int(v) for v in row) for row in data["confusion"]),
            roc=tuple(
                RocCurve(label=r["label"], fpr=tuple(r["fpr"]), tpr=tuple(r["tpr"]), auc=r["auc"])
                for r in data["roc"]
            ),
            calibration=tuple(CalibrationBin(**b) for b in data["calibration"]),
            ece=float(data["ece"]) if data["ece"] is not None else math.nan,
            calibration_target=data["calibration_target"],
            n_boot=int(data["n_boot"]),
            seed=int(data["seed"]),
            alpha=float(data["alpha"]),
            extra={k: (math.nan if v is None else float(v)) for k, v in data.get("extra", {}).items()},
            resampled=str(data.get("resampled", "cases")),
        )


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def card_value(manifest_metrics: Mapping[str, Any], name: str) -> float | None:
    """The card's number for metric ``name`` (under its own name or a known alias), if numeric."""
    for key in (name, *CARD_ALIASES.get(name, ())):
        value = manifest_metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def validate(
    data: ValidationData,
    manifest_metrics: Mapping[str, float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ValidationSummary:
    """All metrics of ``data`` with bootstrap CIs, compared with the card's ``manifest_metrics``."""
    cases = _Cases(data)
    names = metric_names(data.kind, manifest_metrics)
    ones = np.ones((1, cases.n))
    groups = _group_index(data.groups, cases.n)
    replicates = _bootstrap_replicates(cases, names, n_boot, seed, groups)  # one set of resamples for all
    results: list[MetricResult] = []
    for name in names:
        value = _as_optional(_WEIGHTED[name](cases, ones)[0])
        low, high = _interval(replicates[name], alpha)
        card = card_value(manifest_metrics, name)
        within = None if card is None or low is None or high is None else bool(low <= card <= high)
        results.append(MetricResult(name, value, low, high, card, within))
    binary = data.kind == "binary"
    return ValidationSummary(
        kind=data.kind,
        classes=tuple(data.classes),
        n=cases.n,
        class_counts=tuple(int(c) for c in np.bincount(cases.y_true, minlength=cases.k)),
        positive=data.positive if binary else None,
        threshold=cases.threshold if binary else None,
        metrics=tuple(results),
        confusion=confusion_matrix(data),
        roc=roc_curves(data),
        calibration=calibration_bins(data),
        ece=expected_calibration_error(data),
        calibration_target="positive-class probability" if binary else "top-class confidence",
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        extra={key: float(value) for key, value in data.extra.items()},
        resampled="groups" if groups is not None else "cases",
    )
