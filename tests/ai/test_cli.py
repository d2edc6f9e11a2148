"""`tianfu ai` from the shell: list, validate with a report on disk, switch versions with a reason."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.cli.test_cli import env  # noqa: F401 - fixture
from tianfu.cli import app
from tianfu.core.audit.models import AuditRecord

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"


def test_validate_prints_metrics_and_writes_both_reports(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    listed = runner.invoke(app, ["ai", "models"])
    assert listed.exit_code == 0, listed.output
    assert "tianfu-imaging-pneumonia" in listed.output

    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "ai",
            "validate",
            "--model",
            "tianfu-imaging-pneumonia",
            "--data",
            str(FIXTURES / "pneumonia_val40.npz"),
            "--out",
            str(out),
            "--bootstrap",
            "200",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 40
    assert summary["version"] == "1.0.0"
    assert {m["name"] for m in summary["metrics"]} >= {"auc", "accuracy", "sensitivity", "specificity"}
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_a_dataset_of_the_wrong_kind_fails_with_its_reason(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    wrong = tmp_path / "labels.csv"
    wrong.write_text("id,label\n1,0\n")
    result = runner.invoke(
        app, ["ai", "validate", "--model", "tianfu-imaging-pneumonia", "--data", str(wrong)]
    )
    assert result.exit_code == 1
    assert "validation failed" in result.output


def test_switching_off_and_back_needs_a_reason_and_is_audited(env: dict[str, str], db: Session) -> None:  # noqa: F811
    assert runner.invoke(app, ["ai", "deactivate", "sepsis"]).exit_code != 0  # no reason given
    off = runner.invoke(app, ["ai", "deactivate", "sepsis", "--reason", "night-shift review"])
    assert off.exit_code == 0, off.output
    on = runner.invoke(app, ["ai", "activate", "sepsis", "1.0.0", "--reason", "review done"])
    assert on.exit_code == 0, on.output
    assert runner.invoke(app, ["ai", "activate", "sepsis", "9.9", "--reason", "typo"]).exit_code == 1
    actions = db.scalars(
        select(AuditRecord.action).where(AuditRecord.action.like("ai_model.%")).order_by(AuditRecord.seq)
    ).all()
    assert actions == ["ai_model.deactivate", "ai_model.activate"]
