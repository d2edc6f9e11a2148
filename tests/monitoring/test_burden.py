"""Alarm burden on recorded patients, with and without the delay and hysteresis rules."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tianfu.cli import app
from tianfu.monitoring.burden import measure
from tianfu.monitoring.replay import Recording, load

DEMO_DATA = Path(__file__).parents[2] / "src" / "tianfu" / "monitoring" / "demo_data"


def test_a_value_hovering_at_a_limit_alarms_once_with_hysteresis_and_each_time_without() -> None:
    # SpO2 dips to 89 and back to 90-91 every other minute: without hysteresis each dip is a new alarm.
    rows = [
        {"heart_rate": 80.0, "spo2": 89.0 if minute % 2 else 91.0, "respiratory_rate": 16.0}
        for minute in range(60)
    ]
    result = measure([Recording("hover", 60.0, rows)], progress=None)
    with_rules, without = result["with_delay_and_hysteresis"], result["without"]
    # One hour of one bed; NEWS2 stays at its single-3 medium alarm throughout (SpO2 ≤ 91 scores 3).
    assert with_rules["by_category"] == {"physiological": 24.0, "score": 24.0, "technical": 0.0}
    assert without["by_category"] == {"physiological": 30 * 24.0, "score": 24.0, "technical": 0.0}


def test_demo_recordings_alarm_less_with_the_rules() -> None:
    result = measure(load([DEMO_DATA]), progress=None)
    assert result["recordings"] == len(list(DEMO_DATA.glob("*.psv"))) + len(list(DEMO_DATA.glob("*.csv")))
    with_rules, without = result["with_delay_and_hysteresis"], result["without"]
    assert 0 < with_rules["per_bed_day"] < without["per_bed_day"]
    assert with_rules["by_category"]["technical"] > 0  # the numerics record has sensor-off stretches


def test_cli_prints_json() -> None:
    result = CliRunner().invoke(app, ["monitor", "alarm-burden", str(DEMO_DATA), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["recordings"] == 2
    missing = CliRunner().invoke(app, ["monitor", "alarm-burden", "/nonexistent"])
    assert missing.exit_code == 1
