"""Measure free-text symptom recognition (``tianfu.triage.intake``) on DXY's patient self-reports.

    .venv/bin/python training/triage/measure_intake.py --data /work/shared/data/triage/dxy/train.json

DXY's ``self_repo`` is the patient's own words and its ``explicit`` symptoms the annotators' truth.
The recogniser is built with ``SymptomRecogniser.for_vocabulary`` over every DXY symptom name
(explicit and implicit) and run on every ``self_repo``.

The synonym table was written while reading DXY texts, so the cases are split deterministically by
a hash of their id: the ``dev`` half is what the table's authors looked at (and its ``source``
column marks forms seen there as ``dxy-dev``); the ``held_out`` half is only measured. Both are
reported; quote ``held_out``.

Metrics, micro-averaged over cases:

* ``symptom``: symptoms recognised (any status) against the explicit symptoms, polarity ignored.
* ``polarity``: (symptom, status) pairs against (symptom, true→present / false→absent /
  null→uncertain) pairs. DXY's explicit symptoms are all ``true``, so every absent or uncertain
  mention counts as a false positive here, even a correct one ("不发烧" when the annotators listed
  nothing about fever).
* ``present``: symptoms recognised as present against the explicit ``true`` ones — how well the
  positive findings a triage model would consume are read.

The last line printed is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tianfu.triage.intake import SymptomMention, SymptomRecogniser

SPLIT_SALT = "tianfu-intake:"
_GOLD_STATUS = {True: "present", False: "absent", None: "uncertain"}


def split_of(case_id: str) -> str:
    """``dev`` or ``held_out``, from a salted SHA-256 of the id (stable across runs and machines)."""
    digest = hashlib.sha256((SPLIT_SALT + case_id).encode("utf-8")).hexdigest()
    return "dev" if int(digest[:8], 16) % 2 == 0 else "held_out"


class Counts:
    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0

    def add(self, predicted: set[Any], gold: set[Any]) -> None:
        self.tp += len(predicted & gold)
        self.fp += len(predicted - gold)
        self.fn += len(gold - predicted)

    def report(self) -> dict[str, float | int]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(f, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def measure(
    recogniser: SymptomRecogniser, cases: Sequence[dict[str, Any]], show_errors: bool = False
) -> dict[str, Any]:
    symptom, polarity, present = Counts(), Counts(), Counts()
    statuses: Counter[str] = Counter()
    for case in cases:
        mentions = recogniser.recognise(case["self_repo"])
        explicit: dict[str, bool | None] = case["explicit"]
        statuses.update(m.status for m in mentions)
        symptom.add({m.symptom for m in mentions}, set(explicit))
        polarity.add(
            {(m.symptom, m.status) for m in mentions}, {(s, _GOLD_STATUS[v]) for s, v in explicit.items()}
        )
        present.add(
            {m.symptom for m in mentions if m.status == "present"}, {s for s, v in explicit.items() if v}
        )
        if show_errors:
            _print_errors(case, mentions)
    return {
        "n": len(cases),
        "n_gold_symptoms": sum(len(c["explicit"]) for c in cases),
        "symptom": symptom.report(),
        "polarity": polarity.report(),
        "present": present.report(),
        "predicted_status": dict(sorted(statuses.items())),
    }


def _print_errors(case: dict[str, Any], mentions: Iterable[SymptomMention]) -> None:
    got = {m.symptom: m for m in mentions}
    gold = {s for s, v in case["explicit"].items() if v}
    missed = sorted(gold - {s for s, m in got.items() if m.status == "present"})
    extra = sorted(
        f"{s}({m.status}:{m.text})" for s, m in got.items() if s not in gold or m.status != "present"
    )
    if missed or extra:
        print(f"# {case['id']} missed={missed} extra={extra}\n  {case['self_repo'].strip()}", file=sys.stderr)


def timing(recogniser: SymptomRecogniser, texts: Sequence[str]) -> dict[str, float]:
    """Median microseconds per call on the real texts, and per 200 characters."""
    per_call, per_200 = [], []
    for text in texts:
        runs = 20
        start = time.perf_counter()
        for _ in range(runs):
            recogniser.recognise(text)
        elapsed = (time.perf_counter() - start) / runs * 1e6
        per_call.append(elapsed)
        per_200.append(elapsed * 200 / max(len(text), 1))
    return {
        "median_us_per_text": round(statistics.median(per_call), 1),
        "median_us_per_200_chars": round(statistics.median(per_200), 1),
        "max_us_per_text": round(max(per_call), 1),
        "median_text_chars": statistics.median(len(t) for t in texts),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="DXY train.json (cases with self_repo)")
    parser.add_argument(
        "--show-errors",
        choices=("dev",),
        help="print the dev cases with misses or extra mentions to stderr (the held-out half stays unread)",
    )
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="measure the dev half only (while the synonym table is being written)",
    )
    args = parser.parse_args(argv)

    cases = json.loads(args.data.read_text(encoding="utf-8"))
    cases = [c for c in cases if c.get("self_repo")]
    vocabulary = sorted({s for c in cases for s in (*c["explicit"], *c["implicit"])})

    start = time.perf_counter()
    recogniser = SymptomRecogniser.for_vocabulary(vocabulary)
    build_ms = (time.perf_counter() - start) * 1e3

    halves: dict[str, list[dict[str, Any]]] = {"dev": [], "held_out": []}
    for case in cases:
        halves[split_of(case["id"])].append(case)

    result: dict[str, Any] = {
        "data": str(args.data),
        "n_cases": len(cases),
        "vocabulary_size": len(vocabulary),
        "split": f"sha256('{SPLIT_SALT}' + id)[:8] as int, even -> dev, odd -> held_out",
        "dev": measure(recogniser, halves["dev"], show_errors=args.show_errors == "dev"),
    }
    if not args.dev_only:
        result["held_out"] = measure(recogniser, halves["held_out"])
        result["all"] = measure(recogniser, cases)
    result["build_ms"] = round(build_ms, 1)
    result["timing"] = timing(
        recogniser, [c["self_repo"] for c in halves["dev" if args.dev_only else "held_out"]]
    )
    for half in ("dev", "held_out", "all"):
        if half not in result:
            continue
        scores = "  ".join(
            f"{kind} P/R/F1 "
            + "/".join(f"{result[half][kind][k]:.3f}" for k in ("precision", "recall", "f1"))
            for kind in ("symptom", "polarity", "present")
        )
        print(f"{half:9s} n={result[half]['n']:3d}  {scores}")
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
