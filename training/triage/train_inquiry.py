"""Train the symptom-inquiry models shipped in ``tianfu/triage/models/inquiry/``, one per benchmark.

    python training/triage/train_inquiry.py --data ../shared/data/triage \\
        --out src/tianfu/triage/models/inquiry/

For each benchmark folder (``dxy``, ``mz4-acl2018``, ``mz4-1733``, ``mz10``, ``sd90``, ``mdd``) that holds a
``train.json``:

1. Split the training file into 5 folds (seeded shuffle).
2. For each setting of the grid (smoothing ``alpha``, stop confidence, minimum expected accuracy gain),
   fit on 4 folds and run the standard protocol on the fifth (simulated patient answers from
   ``implicit``, "not sure" otherwise; the agent starts from ``explicit``; cap 20 turns).
3. Choose the most accurate setting whose mean number of questions stays under the turn budget (HRL's
   published average turns where there is one, 6 otherwise): Tianfu should ask fewer questions than HRL.
4. Fit on the whole file with that setting; write ``<name>.npz`` + ``<name>.json`` (with the
   cross-validated metrics of the chosen setting, mean and standard deviation over folds).

The choice of setting is made on the same folds that report its metrics, so the numbers are slightly
optimistic; the official test splits are held out and evaluated independently. Needs numpy only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from tianfu.triage.inquiry import Case, InquiryModel, evaluate, read_cases

# name -> (language, published HRL average turns or None, what the benchmark is)
BENCHMARKS: dict[str, tuple[str, float | None, str]] = {
    "dxy": ("zh", 8.61, "DXY (Xu et al., AAAI 2019): 5 diseases, 41 symptoms"),
    "mz4-acl2018": ("zh", 10.0, "MZ-4, ACL 2018 release (Wei et al.): 4 diseases, 66 symptoms"),
    "mz4-1733": ("zh", 5.08, "MZ-4, 1,733-case release (Liao et al. 2020, HRL): 4 diseases, 230 symptoms"),
    "mz10": ("zh", 6.99, "MZ-10 (IMCS-21, Chen et al. 2022): 10 paediatric diseases, 331 symptoms"),
    "sd90": ("en", 6.48, "SD-90 (Liao et al. 2020, SymCat-derived synthetic): 90 diseases, 266 symptoms"),
    "mdd": ("en", None, "MDD (Hou et al., AAAI 2023): 12 diseases, 116 symptoms"),
}
DEFAULT_BUDGET = 6.0
MAX_TURNS = 20
ALPHAS = (0.1, 0.5)
STOPS = (
    (0.6, 0.0),
    (0.7, 0.0),
    (0.8, 0.0),
    (0.9, 0.0),
    (0.9, 0.003),
    (0.9, 0.006),
    (0.95, 0.003),
    (0.95, 0.005),
)
# SD-90's 24,000 cases make each setting cost a minute or more on two cores: a smaller grid there.
LARGE = 5000
LARGE_ALPHAS = (0.5,)
LARGE_STOPS = ((0.9, 0.02), (0.9, 0.03), (0.9, 0.04), (0.9, 0.06))


def folds_of(n: int, k: int = 5, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)  # noqa: S311 - reproducible folds
    return [order[i::k] for i in range(k)]


def cross_validate(name: str, cases: list[Case], language: str, budget: float, log: Any) -> dict[str, Any]:
    folds = folds_of(len(cases))
    best: dict[str, Any] | None = None
    large = len(cases) > LARGE
    for alpha in LARGE_ALPHAS if large else ALPHAS:
        models = []
        for held in folds:
            held_set = set(held)
            train = [c for i, c in enumerate(cases) if i not in held_set]
            models.append(InquiryModel.fit(train, name=name, language=language, alpha=alpha))
        for stop_confidence, min_gain in LARGE_STOPS if large else STOPS:
            per_fold = [
                evaluate(
                    model,
                    [cases[i] for i in held],
                    max_turns=MAX_TURNS,
                    stop_confidence=stop_confidence,
                    min_accuracy_gain=min_gain,
                )
                for model, held in zip(models, folds, strict=True)
            ]
            row = {
                "alpha": alpha,
                "stop_confidence": stop_confidence,
                "min_accuracy_gain": min_gain,
                **{
                    key: round(statistics.mean(f[key] for f in per_fold), 4)
                    for key in ("accuracy", "symptom_recall", "avg_turns")
                },
                "accuracy_sd": round(statistics.stdev(f["accuracy"] for f in per_fold), 4),
            }
            print(f"  {name}: {row}", file=log, flush=True)
            if row["avg_turns"] < budget and (best is None or row["accuracy"] > best["accuracy"]):
                best = row
    if best is None:
        raise SystemExit(f"{name}: no setting stays under {budget} turns")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per benchmark")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="benchmark names (default: every one found)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    today = (
        (dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC))
        .date()
        .isoformat()
    )
    for name, (language, hrl_turns, description) in BENCHMARKS.items():
        path = args.data / name / "train.json"
        if (args.only and name not in args.only) or not path.exists():
            continue
        started = time.monotonic()
        cases = read_cases(path)
        budget = hrl_turns if hrl_turns is not None else DEFAULT_BUDGET
        print(f"{name}: {len(cases)} cases, turn budget {budget}", file=sys.stderr, flush=True)
        chosen = cross_validate(name, cases, language, budget, sys.stderr)
        model = InquiryModel.fit(cases, name=name, version="1", language=language, alpha=chosen["alpha"])
        model.stop_confidence = chosen["stop_confidence"]
        model.min_accuracy_gain = chosen["min_accuracy_gain"]
        model.max_turns = MAX_TURNS
        model.metadata = {
            "description": description,
            "trained": today,
            "training_file": f"{name}/train.json",
            "training_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "cases": len(cases),
            "alpha": chosen["alpha"],
            "turn_budget": budget,
            "cross_validation": {
                "folds": 5,
                "seed": 0,
                "max_turns": MAX_TURNS,
                "accuracy": chosen["accuracy"],
                "accuracy_sd": chosen["accuracy_sd"],
                "symptom_recall": chosen["symptom_recall"],
                "avg_turns": chosen["avg_turns"],
            },
        }
        model.save(args.out / name)
        print(
            json.dumps(
                {
                    "model": name,
                    **model.metadata["cross_validation"],
                    "seconds": round(time.monotonic() - started),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
