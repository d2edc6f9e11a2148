"""Evaluate the sepsis early-warning model and a partial-NEWS2 baseline on PhysioNet 2019 stays.

``evaluate(path)`` takes a directory of ``.psv`` stays or a ``.tar.gz`` of them (streamed, never
extracted to disk) and returns a JSON-ready dict: the number of stays and hours, hourly AUROC and
the Challenge's normalised utility for the shipped model (alarm = probability >= the operating
threshold chosen on the training folds) and for partial NEWS2 (score as risk, alarm at >= 5).

The utility follows the PhysioNet/CinC 2019 definition (Reyna et al., Crit Care Med 2020; the
Challenge's ``evaluate_sepsis_score.py``): for a septic stay, ``t_sepsis`` = first hour with
``SepsisLabel == 1`` plus 6; an alarm at hour t earns a reward rising linearly from 0 at
``t_sepsis - 12`` to 1 at ``t_sepsis - 6`` and falling back to 0 at ``t_sepsis + 3`` (never less than
-0.05 before the window), a missed hour after ``t_sepsis - 6`` costs down to -2 at
``t_sepsis + 3``, hours after ``t_sepsis + 3`` count 0; an alarm in a non-septic stay costs 0.05.
The total is normalised so that raising no alarm scores 0 and the best possible alarms score 1.

Command line: ``python -m tianfu.monitoring.evaluate PATH`` prints the JSON; progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tianfu.monitoring.sepsis import (
    LABEL_INDEX,
    SepsisModel,
    extract_features,
    iter_stays,
    news2_for_stay,
)

FloatArray = npt.NDArray[np.float64]

DT_EARLY: Final = -12
DT_OPTIMAL: Final = -6
DT_LATE: Final = 3
MAX_U_TP: Final = 1.0
MIN_U_FN: Final = -2.0
U_FP: Final = -0.05
U_TN: Final = 0.0
NEWS2_ALARM: Final = 5.0


# --------------------------------------------------------------------------------------------
# Challenge utility
# --------------------------------------------------------------------------------------------


def utility_weights(labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per-hour utility of raising an alarm and of not raising one, for one stay's labels.

    Summing ``where(prediction, u_alarm, u_quiet)`` gives the Challenge's per-stay utility.
    """
    lab = np.asarray(labels, dtype=np.float64).reshape(-1)
    n = lab.shape[0]
    if not np.any(lab == 1):
        return np.full(n, U_FP), np.full(n, U_TN)
    t_sepsis = int(np.argmax(lab == 1)) - DT_OPTIMAL
    d = np.arange(n, dtype=np.float64) - t_sepsis  # hours relative to t_sepsis
    m1 = MAX_U_TP / (DT_OPTIMAL - DT_EARLY)
    b1 = -m1 * DT_EARLY
    m2 = -MAX_U_TP / (DT_LATE - DT_OPTIMAL)
    b2 = -m2 * DT_LATE
    m3 = MIN_U_FN / (DT_LATE - DT_OPTIMAL)
    b3 = -m3 * DT_OPTIMAL
    early = d <= DT_OPTIMAL
    window = (d > DT_OPTIMAL) & (d <= DT_LATE)
    u_alarm = np.where(early, np.maximum(m1 * d + b1, U_FP), np.where(window, m2 * d + b2, 0.0))
    u_quiet = np.where(window, m3 * d + b3, 0.0)
    return u_alarm, u_quiet


def best_predictions(labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The Challenge's optimal alarms: hours t_sepsis-12 .. t_sepsis+3 of a septic stay, else none."""
    lab = np.asarray(labels).reshape(-1)
    n = lab.shape[0]
    best = np.zeros(n, dtype=np.bool_)
    if np.any(lab == 1):
        t_sepsis = int(np.argmax(lab == 1)) - DT_OPTIMAL
        best[max(0, t_sepsis + DT_EARLY) : min(t_sepsis + DT_LATE + 1, n)] = True
    return best


def prediction_utility(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    """Unnormalised utility of binary hourly predictions for one stay."""
    pred = np.asarray(predictions).reshape(-1).astype(np.bool_)
    u_alarm, u_quiet = utility_weights(labels)
    if pred.shape != u_alarm.shape:
        raise ValueError("labels and predictions must have the same length")
    return float(np.where(pred, u_alarm, u_quiet).sum())


def normalized_utility(labels: Sequence[npt.ArrayLike], predictions: Sequence[npt.ArrayLike]) -> float:
    """Challenge score of a cohort: (observed - no alarms) / (best - no alarms), summed over stays."""
    if len(labels) != len(predictions):
        raise ValueError("one prediction vector per stay")
    observed = best = inaction = 0.0
    for lab, pred in zip(labels, predictions, strict=True):
        observed += prediction_utility(lab, pred)
        best += prediction_utility(lab, best_predictions(lab))
        inaction += prediction_utility(lab, np.zeros(np.asarray(lab).reshape(-1).shape[0]))
    if best == inaction:
        raise ValueError("utility is undefined for a cohort without a septic stay")
    return (observed - inaction) / (best - inaction)


@dataclass
class UtilityTable:
    """Hourly utility weights of a cohort, for scoring many thresholds at once."""

    u_alarm: FloatArray
    u_quiet: FloatArray
    best: float  # summed utility of the optimal predictions
    inaction: float  # summed utility of raising no alarm

    @classmethod
    def from_labels(cls, stays_labels: Sequence[npt.ArrayLike]) -> UtilityTable:
        ua: list[FloatArray] = []
        uq: list[FloatArray] = []
        best = inaction = 0.0
        for lab in stays_labels:
            a, q = utility_weights(lab)
            ua.append(a)
            uq.append(q)
            best += float(np.where(best_predictions(lab), a, q).sum())
            inaction += float(q.sum())
        empty = np.empty(0)
        return cls(np.concatenate(ua) if ua else empty, np.concatenate(uq) if uq else empty, best, inaction)

    def score(self, alarms: npt.ArrayLike) -> float:
        """Normalised utility of hourly alarms aligned with the cohort's concatenated hours."""
        a = np.asarray(alarms, dtype=np.bool_)
        observed = float(np.where(a, self.u_alarm, self.u_quiet).sum())
        return (observed - self.inaction) / (self.best - self.inaction)

    def sweep(self, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Normalised utility of ``alarm = score >= th`` for every distinct score ``th``.

        Returns ``(thresholds, utilities)`` with thresholds decreasing.
        """
        s = np.asarray(scores, dtype=np.float64)
        order = np.argsort(-s, kind="stable")
        gain = np.cumsum((self.u_alarm - self.u_quiet)[order])
        ss = s[order]
        last = np.r_[ss[1:] != ss[:-1], True]  # last position of each run of equal scores
        return ss[last], gain[last] / (self.best - self.inaction)

    def best_threshold(self, scores: npt.ArrayLike) -> tuple[float, float]:
        """The threshold with the highest normalised utility, and that utility."""
        th, u = self.sweep(scores)
        i = int(np.argmax(u))
        return float(th[i]), float(u[i])


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count one half), as the Challenge's trapezoidal AUROC."""
    y = np.asarray(labels).reshape(-1) == 1
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = float(avg_rank[inverse][y].sum())
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------
# Evaluation over a cohort of stays
# --------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate(
    path: str | os.PathLike[str],
    model: SepsisModel | None = None,
    *,
    progress: bool = True,
    batch_rows: int = 50_000,
) -> dict[str, Any]:
    """Score every stay under ``path`` (directory or tar archive of ``.psv`` files).

    Returns ``n_stays``, ``n_hours``, ``n_septic_stays``, the model's hourly ``auroc`` and
    ``utility`` at ``threshold`` (the operating point chosen on the training folds), the same two
    metrics for partial NEWS2 (``news2_auroc``, ``news2_utility`` at ``news2_threshold`` = 5),
    ``model_version`` and ``elapsed_s``.
    """
    start = time.perf_counter()
    mdl = model if model is not None else SepsisModel.load()
    threshold = mdl.operating_threshold
    labels: list[FloatArray] = []
    probs: list[FloatArray] = []
    news: list[FloatArray] = []
    pending: list[FloatArray] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending_rows
        if pending:
            probs.append(mdl.predict_proba(np.concatenate(pending)))
            pending.clear()
            pending_rows = 0

    n_stays = 0
    for name, stay in iter_stays(path):
        n_stays += 1
        lab = stay[:, LABEL_INDEX]
        if np.isnan(lab).any():
            raise ValueError(f"stay {name} has hours without SepsisLabel")
        labels.append(lab)
        news.append(news2_for_stay(stay))
        feats = extract_features(stay)
        pending.append(feats)
        pending_rows += feats.shape[0]
        if pending_rows >= batch_rows:
            flush()
        if progress and n_stays % 2000 == 0:
            _log(f"evaluate: {n_stays} stays, {time.perf_counter() - start:.1f} s")
    flush()
    if n_stays == 0:
        raise ValueError(f"no .psv stays found in {path}")
    y = np.concatenate(labels)
    p = np.concatenate(probs)
    n2 = np.concatenate(news)
    table = UtilityTable.from_labels(labels)
    has_septic = table.best != table.inaction
    result: dict[str, Any] = {
        "n_stays": n_stays,
        "n_hours": int(y.shape[0]),
        "n_septic_stays": int(sum(bool(np.any(lab == 1)) for lab in labels)),
        "model_version": str(mdl.metadata.get("version", "")),
        "auroc": auroc(y, p),
        "utility": table.score(p >= threshold) if has_septic else float("nan"),
        "threshold": threshold,
        "news2_auroc": auroc(y, n2),
        "news2_utility": table.score(n2 >= NEWS2_ALARM) if has_septic else float("nan"),
        "news2_threshold": NEWS2_ALARM,
        "alarm_rate": float(np.mean(p >= threshold)),
        "news2_alarm_rate": float(np.mean(n2 >= NEWS2_ALARM)),
    }
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    if progress:
        _log(f"evaluate: done, {n_stays} stays in {result['elapsed_s']} s")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        _log("usage: python -m tianfu.monitoring.evaluate PATH  (directory or .tar.gz of .psv stays)")
        return 2
    print(json.dumps(evaluate(args[0])))  # one line: the last line of standard output is the result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
