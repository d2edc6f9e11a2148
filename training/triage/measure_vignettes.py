"""Measure the urgency rules (``tianfu.triage.urgency``) on the written triage vignettes.

    .venv/bin/python training/triage/measure_vignettes.py [--vignettes tests/triage/vignettes.json]
        [--rules path/to/rules.json] [--details]

Nurse-channel vignettes carry an expected level; the computed level is compared with it:
under-triage = computed less urgent than expected (the safety metric, triage.md §2 guidance 1),
over-triage = more urgent, exact agreement, and the quadratic-weighted kappa over the four levels.
Self-service vignettes carry the expected routing (go to the emergency desk or not); a missed
referral is counted as self-service under-triage.

The vignettes were written by the Tianfu engineers from the same document the rules come from, not
by clinicians: agreement measures whether the code does what the rules file says, not clinical
validity. The last line printed is one JSON object (for the README).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tianfu.triage.urgency import (
    Level,
    UrgencyInput,
    UrgencyResult,
    UrgencyRules,
    VitalSigns,
    assess,
    load_rules,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VIGNETTES = ROOT / "tests" / "triage" / "vignettes.json"


def vignette_input(vignette: Mapping[str, Any]) -> UrgencyInput:
    """The :class:`UrgencyInput` a vignette describes (shared with the tests)."""
    vitals = vignette.get("vitals")
    nurse = vignette.get("nurse_level")
    model = vignette.get("model_level")
    return UrgencyInput(
        channel=vignette["channel"],
        text=vignette.get("text", ""),
        symptoms=tuple(vignette.get("symptoms", ())),
        vitals=VitalSigns(**vitals) if vitals is not None else None,
        pain_score=vignette.get("pain"),
        age_years=vignette.get("age"),
        nurse_level=Level(nurse) if nurse is not None else None,
        model_level=Level(model) if model is not None else None,
    )


def load_vignettes(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    vignettes: list[dict[str, Any]] = document["vignettes"]
    return vignettes


def quadratic_weighted_kappa(expected: Sequence[int], computed: Sequence[int], k: int = 4) -> float:
    """Cohen's kappa with quadratic weights over levels 1..k (1.0 = perfect, 0 = chance)."""
    observed = np.zeros((k, k))
    for a, b in zip(expected, computed, strict=True):
        observed[a - 1, b - 1] += 1
    n = observed.sum()
    chance = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / (k - 1) ** 2
    denominator = float((weights * chance).sum())
    if denominator == 0.0:  # one category only on both sides: agreement is perfect by construction
        return 1.0
    return 1.0 - float((weights * observed).sum()) / denominator


def measure(vignettes: Sequence[Mapping[str, Any]], rules: UrgencyRules) -> tuple[dict[str, Any], list[str]]:
    """Metrics and one line per disagreement."""
    expected_levels: list[int] = []
    computed_levels: list[int] = []
    lines: list[str] = []
    under = over = exact_mismatch = 0
    self_total = self_missed = self_extra = 0
    for vignette in vignettes:
        result: UrgencyResult = assess(vignette_input(vignette), rules)
        if vignette["channel"] == "nurse":
            assert result.level is not None
            want, got = int(vignette["expected_level"]), int(result.level)
            expected_levels.append(want)
            computed_levels.append(got)
            if got > want:
                under += 1
                lines.append(f"UNDER {vignette['id']}: expected {want}, computed {got}")
            elif got < want:
                over += 1
                lines.append(f"over  {vignette['id']}: expected {want}, computed {got}")
            if vignette.get("exact", False) and got != want:
                exact_mismatch += 1
        else:
            self_total += 1
            want_go, got_go = bool(vignette["expected_go_to_emergency_desk"]), result.go_to_emergency_desk
            if want_go and not got_go:
                self_missed += 1
                lines.append(f"UNDER {vignette['id']}: expected emergency desk, advised outpatient")
            elif got_go and not want_go:
                self_extra += 1
                lines.append(f"over  {vignette['id']}: expected outpatient, sent to emergency desk")
    n = len(expected_levels)
    agree = sum(a == b for a, b in zip(expected_levels, computed_levels, strict=True))
    metrics: dict[str, Any] = {
        "rules_version": rules.version,
        "n": n,
        "under_triage_rate": round(under / n, 4) if n else None,
        "over_triage_rate": round(over / n, 4) if n else None,
        "exact_agreement": round(agree / n, 4) if n else None,
        "quadratic_weighted_kappa": round(quadratic_weighted_kappa(expected_levels, computed_levels), 4)
        if n
        else None,
        "exact_flag_mismatches": exact_mismatch,
        "self_service_n": self_total,
        "self_service_missed_referral_rate": round(self_missed / self_total, 4) if self_total else None,
        "self_service_unneeded_referral_rate": round(self_extra / self_total, 4) if self_total else None,
        "vignettes_written_by": "engineers, not clinicians",
    }
    return metrics, lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vignettes", type=Path, default=DEFAULT_VIGNETTES)
    parser.add_argument("--rules", type=Path, default=None, help="rules file (default: the shipped one)")
    parser.add_argument("--details", action="store_true", help="print every disagreement")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
    metrics, lines = measure(load_vignettes(args.vignettes), rules)
    if args.details:
        for line in lines:
            print(line)
    print(json.dumps(metrics, ensure_ascii=False))
    return 1 if metrics["under_triage_rate"] or metrics["self_service_missed_referral_rate"] else 0


if __name__ == "__main__":
    sys.exit(main())
