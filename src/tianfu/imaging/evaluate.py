"""Evaluate a shipped imaging model on a MedMNIST-layout ``.npz`` (numpy only, no scikit-learn).

``{split}_images`` (N, H, W[, 3]) and ``{split}_labels`` (N, 1) as in the official MedMNIST v2 files.
Metrics follow ``medmnist/evaluator.py``: AUC (binary: the positive-class score; multi-class: mean
one-vs-rest AUC) and accuracy of the argmax class. Sensitivity and specificity are taken at the
shipped operating point (for ``retina`` the referable-retinopathy point, grade >= 2).

    python -m tianfu.imaging.evaluate --task pneumonia --npz pneumoniamnist.npz [--split val]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tianfu.imaging.inference import BATCH, ImagingModel, tasks

F64Array = npt.NDArray[np.float64]


class MissingSplitError(ValueError):
    """The ``.npz`` has no ``{split}_images`` / ``{split}_labels``."""


def roc_auc(positive: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is absent."""
    y = np.asarray(positive, dtype=bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_ovr_auc(labels: npt.ArrayLike, probabilities: F64Array) -> float:
    """Mean one-vs-rest AUC over classes, as MedMNIST reports multi-class AUC."""
    y = np.asarray(labels).ravel()
    return float(np.mean([roc_auc(y == k, probabilities[:, k]) for k in range(probabilities.shape[1])]))


def quadratic_weighted_kappa(labels: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> float:
    """Cohen's kappa with quadratic weights: agreement on an ordinal scale (DR grades)."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    observed = np.zeros((n_classes, n_classes))
    np.add.at(observed, (y, p), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grid = np.arange(n_classes)
    weights = (grid[:, None] - grid[None, :]) ** 2 / (n_classes - 1) ** 2
    denominator = float((weights * expected).sum())
    return float(1.0 - (weights * observed).sum() / denominator) if denominator > 0 else float("nan")


def metrics(
    labels: npt.ArrayLike,
    probabilities: F64Array,
    positive_classes: Sequence[int],
    threshold: float,
) -> dict[str, float | int]:
    """AUC, argmax accuracy and sensitivity/specificity at ``threshold`` on the positive-class score.

    Shared with ``training/imaging/train.py`` so that training-time and shipped numbers are computed
    by the same code.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    probs = np.asarray(probabilities, dtype=np.float64)
    n_classes = probs.shape[1]
    is_pos = np.isin(y, list(positive_classes))
    score = probs[:, list(positive_classes)].sum(axis=1)
    flagged = score >= threshold
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    predicted = probs.argmax(axis=1)
    out: dict[str, float | int] = {
        "n": len(y),
        "auc": roc_auc(is_pos, score) if n_classes == 2 else macro_ovr_auc(y, probs),
        "accuracy": float((predicted == y).mean()),
        "sensitivity": float((flagged & is_pos).sum() / n_pos) if n_pos else float("nan"),
        "specificity": float((~flagged & ~is_pos).sum() / n_neg) if n_neg else float("nan"),
        "threshold": float(threshold),
        "n_positive": n_pos,
    }
    if n_classes > 2:
        out["auc_positive"] = roc_auc(is_pos, score)  # e.g. referable DR (grade >= 2) vs not
        out["quadratic_kappa"] = quadratic_weighted_kappa(y, predicted, n_classes)
    return out


def load_split(npz: Path, split: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """``({split}_images, {split}_labels as int64 (N,))`` from a MedMNIST-layout file."""
    with np.load(npz) as data:
        keys = set(data.files)
        wanted = (f"{split}_images", f"{split}_labels")
        if not set(wanted) <= keys:
            present = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith(("_images", "_labels"))})
            others = [p for p in present if p != "train"]
            hint = (
                f" Evaluate another split with --split {'val' if 'val' in others else others[0]}."
                if others
                else ""
            )
            if split == "test":
                hint += " (The official MedMNIST test split may be held out from this copy of the data.)"
            raise MissingSplitError(
                f"{npz} has no {wanted[0]!r}/{wanted[1]!r} (splits in it: {', '.join(present) or 'none'})."
                + hint
            )
        return data[wanted[0]], data[wanted[1]].astype(np.int64).ravel()


def evaluate(
    task: str, npz: Path, split: str = "test", *, models_dir: Path | None = None, progress: bool = False
) -> dict[str, Any]:
    """Metrics of the shipped ``task`` model on ``{split}`` of ``npz``: task, n, auc, accuracy, sensitivity,
    specificity (plus threshold, model_version, split; for ``retina`` also the referable-DR AUC and
    quadratic weighted kappa)."""
    model = ImagingModel.load(task, models_dir)
    images, labels = load_split(Path(npz), split)
    if len(images) != len(labels):
        raise ValueError(f"{npz}: {len(images)} images but {len(labels)} labels in split {split!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(model.classes)):
        raise ValueError(f"{npz}: labels outside 0..{len(model.classes) - 1} for task {task!r}")
    parts = []
    for start in range(0, len(images), BATCH):
        parts.append(model.predict_proba(images[start : start + BATCH]))
        if progress:
            print(f"{task}: {min(start + BATCH, len(images))}/{len(images)} images", file=sys.stderr)
    probs = np.concatenate(parts) if parts else np.zeros((0, len(model.classes)))
    result: dict[str, Any] = {"task": task, "split": split, "model_version": model.version}
    result.update(metrics(labels, probs, model.positive_classes, model.threshold))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tianfu imaging evaluate", description="Evaluate a shipped imaging model on a MedMNIST .npz."
    )
    parser.add_argument("--task", required=True, choices=tasks())
    parser.add_argument(
        "--npz", required=True, type=Path, help="MedMNIST layout: {split}_images, {split}_labels"
    )
    parser.add_argument("--split", default="test", help="split prefix in the file (default: test)")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.task, args.npz, args.split, progress=True)
    except MissingSplitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
