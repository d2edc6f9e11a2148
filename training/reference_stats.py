"""Write each shipped model's training-data reference distributions into its metadata JSON.

For every model this computes, from the model's TRAINING data, the distribution of the input summaries
its AI task records with each inference (``InferenceResult.input_features``), and stores them under a
top-level ``"reference"`` key of the model's JSON (nothing else in the file changes). The AI platform
compares field inputs against these references to detect drift.

- numeric summaries: ~10 histogram bins whose edges are training quantiles (so each bin holds about a
  tenth of the training data); values outside the edges count in the first or last bin;
- categorical summaries: the share of each category among all mentions.

Summaries, computed with the same functions the inference tasks call:

- imaging (``tianfu.imaging.ai.input_summary``): ``image_mean``, ``image_std`` of every training image
  (MedMNIST: the official train split; cxr-abnormal: all 1,000 NIH images, which cross-validation and
  the final fit used);
- triage inquiry models: ``symptoms`` stated in each case's first report (categorical over the model's
  vocabulary) and ``symptom_count``; department classifier: ``text_length`` and the ``symptoms`` the
  router finds in each Toyhom question (categories seen at least 5 times, the rest as "(other)") and
  ``symptom_count``;
- sepsis: the latest carried-forward ``HR``, ``Temp``, ``Resp``, ``MAP``, ``O2Sat``, ``Age`` at every
  hour of every training stay (the value an hourly inference records).

Deterministic: the same data give byte-identical JSON files. Run from the repository root:

    python training/reference_stats.py --data /work/shared/data [--only imaging triage sepsis]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tianfu.imaging import ai as imaging_ai
from tianfu.imaging.inference import MODELS_DIR as IMAGING_DIR
from tianfu.imaging.inference import ImagingModel, tasks
from tianfu.monitoring import ai as sepsis_ai
from tianfu.monitoring.sepsis import COLUMNS, iter_stays, locf
from tianfu.triage import ai as triage_ai
from tianfu.triage.departments import CLASSIFIER_NAME, DepartmentRouter, prepare_text
from tianfu.triage.inquiry import read_cases

BINS = 10
MIN_CATEGORY_COUNT = 5  # rarer free-text symptoms pool into "(other)" so the reference stays readable
MEDMNIST_FILES = {"pneumonia": "pneumoniamnist.npz", "breast": "breastmnist.npz", "retina": "retinamnist.npz"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- references --------------------------------------------------------------------------------------


def numeric_reference(name: str, values: Iterable[float], bins: int = BINS) -> dict[str, Any]:
    """Histogram with edges at training quantiles (duplicates merged, so integer data get fewer bins)."""
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError(f"{name}: no values")
    edges = np.unique(np.round(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)), 6))
    if edges.size < 2:  # one value only: a single bin around it
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)
    return {
        "name": name,
        "edges": [float(e) for e in edges],
        "fractions": [round(float(c) / x.size, 6) for c in counts],
        "categories": [],
    }


def categorical_reference(name: str, counts: Counter[str], categories: Sequence[str]) -> dict[str, Any]:
    """Share of each category among all mentions; counts outside ``categories`` must already be pooled."""
    total = sum(counts[c] for c in categories)
    if total == 0:
        raise ValueError(f"{name}: no mentions")
    return {
        "name": name,
        "edges": [],
        "fractions": [round(counts[c] / total, 6) for c in categories],
        "categories": list(categories),
    }


def write_reference(json_path: Path, reference: list[dict[str, Any]]) -> None:
    """Add or replace the ``reference`` key, writing the file in its own JSON style."""
    raw = json_path.read_text(encoding="utf-8")
    data = json.loads(raw)
    style = next(
        (
            (indent, ascii_only)
            for indent in (1, 2, 4, None)
            for ascii_only in (False, True)
            if json.dumps(data, indent=indent, ensure_ascii=ascii_only) + "\n" == raw
        ),
        None,
    )
    if style is None:
        raise ValueError(f"{json_path}: unknown JSON style; refusing to rewrite it")
    data["reference"] = reference
    json_path.write_text(json.dumps(data, indent=style[0], ensure_ascii=style[1]) + "\n", encoding="utf-8")
    log(f"wrote {len(reference)} references into {json_path}")


# ---- imaging -----------------------------------------------------------------------------------------


def imaging_training_images(task: str, data: Path) -> np.ndarray:
    if task in MEDMNIST_FILES:
        with np.load(data / "imaging" / "medmnist" / MEDMNIST_FILES[task]) as z:
            return np.asarray(z["train_images"])
    if task == "cxr-abnormal":
        from PIL import Image

        root = data / "imaging" / "cxr-samples" / "nih1000_64px"
        rows = list(csv.DictReader((root / "labels.csv").open(encoding="utf-8")))
        images = []
        for row in rows:
            with Image.open(root / row["path"]) as picture:
                # Stored as RGB with equal channels; training reads channel 0 (train.py load_nih).
                pixels = np.asarray(picture)
            images.append(pixels[..., 0] if pixels.ndim == 3 else pixels)
        return np.stack(images)
    raise KeyError(f"no training data known for imaging task {task!r}")


def imaging(data: Path) -> None:
    for task in tasks(IMAGING_DIR):
        started = time.perf_counter()
        model = ImagingModel.load(task)
        images = imaging_training_images(task, data)
        summaries = [imaging_ai.input_summary(image, model) for image in images]
        reference = [
            numeric_reference(key, (s[key] for s in summaries)) for key in ("image_mean", "image_std")
        ]
        write_reference(IMAGING_DIR / f"{task}.json", reference)
        log(f"imaging {task}: {len(images)} images in {time.perf_counter() - started:.1f} s")


# ---- triage ------------------------------------------------------------------------------------------


def inquiry(data: Path) -> None:
    for json_path in sorted(triage_ai.INQUIRY_DIR.glob("*.json")):
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        vocabulary = list(meta["symptoms"])
        known = set(vocabulary)
        cases = read_cases(data / "triage" / meta["metadata"]["training_file"])
        mentioned = [[s for s in case.explicit if s in known] for case in cases]
        summaries = [triage_ai.inquiry_summary(m) for m in mentioned]
        counts = Counter(s for summary in summaries for s in summary["symptoms"])
        reference = [
            categorical_reference("symptoms", counts, vocabulary),
            numeric_reference("symptom_count", (s["symptom_count"] for s in summaries)),
        ]
        write_reference(json_path, reference)
        log(f"triage {meta['name']}: {len(cases)} cases")


def departments(data: Path) -> None:
    router = DepartmentRouter.load()
    lines = (data / "triage" / "toyhom-im" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [
        f"{row.get('title', '')} {row.get('ask', '')}" for row in map(json.loads, filter(str.strip, lines))
    ]
    summaries = [triage_ai.complaint_summary(text, router.find_in_text(text)[0]) for text in texts]
    counts = Counter(s for summary in summaries for s in summary["symptoms"])
    frequent = sorted(
        (s for s, n in counts.items() if n >= MIN_CATEGORY_COUNT), key=lambda s: (-counts[s], s)
    )
    pooled = Counter({s: counts[s] for s in frequent})
    pooled[triage_ai.OTHER_CATEGORY] = sum(n for s, n in counts.items() if n < MIN_CATEGORY_COUNT)
    reference = [
        numeric_reference("text_length", (len(prepare_text(t)) for t in texts)),
        categorical_reference("symptoms", pooled, [*frequent, triage_ai.OTHER_CATEGORY]),
        numeric_reference("symptom_count", (s["symptom_count"] for s in summaries)),
    ]
    write_reference(triage_ai.MODELS_DIR / f"{CLASSIFIER_NAME}.json", reference)
    log(f"triage departments: {len(texts)} questions, {len(frequent)} symptom categories")


# ---- sepsis ------------------------------------------------------------------------------------------


def sepsis(data: Path) -> None:
    started = time.perf_counter()
    index = [COLUMNS.index(c) for c in sepsis_ai.SUMMARY_COLUMNS]
    per_hour: list[np.ndarray] = []
    for n, (_name, stay) in enumerate(
        iter_stays(data / "monitoring" / "physionet2019" / "training_setA.tar.gz"), start=1
    ):
        # Row t holds what latest_values() records for an inference on the stay's first t + 1 hours.
        per_hour.append(locf(stay[:, index]))
        if n % 5000 == 0:
            log(f"sepsis: {n} stays, {time.perf_counter() - started:.0f} s")
    values = np.concatenate(per_hour)
    reference = [
        numeric_reference(column, values[:, j]) for j, column in enumerate(sepsis_ai.SUMMARY_COLUMNS)
    ]
    for stem in sepsis_ai.SHIPPED:
        write_reference(sepsis_ai.MODELS_DIR / f"{stem}.json", reference)
    log(f"sepsis: {len(per_hour)} stays, {values.shape[0]} hours in {time.perf_counter() - started:.0f} s")


STEPS = {"imaging": [imaging], "triage": [inquiry, departments], "sepsis": [sepsis]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="the shared data root (see its README)")
    parser.add_argument("--only", nargs="*", choices=sorted(STEPS), default=sorted(STEPS))
    args = parser.parse_args(argv)
    for key in args.only:
        for step in STEPS[key]:
            step(args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
