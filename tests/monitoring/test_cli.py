"""``tianfu monitor news2``: one observation set in, the score as JSON out."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tianfu.cli import app

ACUTE = {
    "respiratory_rate": 25,
    "spo2": 91,
    "on_oxygen": True,
    "systolic_bp": 95,
    "pulse": 120,
    "consciousness": "A",
    "temperature": 38.5,
}


def test_news2_from_an_argument() -> None:
    result = CliRunner().invoke(app, ["monitor", "news2", json.dumps(ACUTE)])
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout.strip().splitlines()[-1])
    # RR 25 → 3, SpO2 91 on scale 1 → 3, oxygen → 2, SBP 95 → 2, pulse 120 → 2, alert → 0, 38.5 °C → 1
    assert score["total"] == 13
    assert score["band"] == "high"
    assert score["subscores"]["respiratory_rate"] == 3
    assert score["subscores"]["on_oxygen"] == 2
    assert not score["partial"]


def test_news2_from_stdin_with_missing_parameters() -> None:
    result = CliRunner().invoke(app, ["monitor", "news2"], input='{"respiratory_rate": 14, "pulse": 80}')
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)
    assert score["total"] == 0
    assert score["partial"]
    assert "spo2" in score["missing"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "Expecting value"),
        ("[1, 2]", "JSON object"),
        ('{"pulse": "fast"}', "pulse must be a number"),
        ('{"heart": 80}', "unknown key"),
        ('{"consciousness": "X"}', "consciousness"),
    ],
)
def test_invalid_input_exits_2_with_the_reason(text: str, message: str) -> None:
    result = CliRunner().invoke(app, ["monitor", "news2", text])
    assert result.exit_code == 2
    assert message in result.output
    assert result.stdout.strip() == "" or "total" not in result.stdout


def test_evaluate_prints_one_json_line_last() -> None:
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "physionet_sample"
    result = CliRunner().invoke(app, ["monitor", "evaluate", str(fixtures)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_stays"] == 12
    assert {"auroc", "utility", "news2_auroc", "news2_utility"} <= set(summary)
