"""The tianfu command line, run in-process with the environment a user would set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from tests.conftest import TEST_SECRET
from tianfu.cli import app
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> dict[str, str]:
    values = {
        "TIANFU_SECRET_KEY": TEST_SECRET,
        "TIANFU_DATABASE_URL": database_url,
        "TIANFU_VAR_DIR": str(tmp_path),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "demo", "db", "user", "audit", "worker"):
        assert command in result.output


def test_default_secret_is_refused_outside_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIANFU_SECRET_KEY", "changethis")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "default or shorter" in result.output


def test_demo_is_refused_outside_demo_mode(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 2
    assert "outside demo mode" in result.output


def test_demo_seeds_once_and_prints_the_accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIANFU_DEMO", "1")
    monkeypatch.setenv("TIANFU_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("TIANFU_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    first = runner.invoke(app, ["demo"])
    assert first.exit_code == 0, first.output
    assert "nurse.wang" in first.output
    assert "Demo-2026-tianfu" in first.output
    again = runner.invoke(app, ["demo"])
    assert again.exit_code == 0
    assert "already seeded" in again.output


def test_db_upgrade_and_current(env: dict[str, str]) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 0
    assert json.loads(current.output)["ok"] is True


def test_user_add_with_password_on_stdin(env: dict[str, str], kernel: Kernel) -> None:
    result = runner.invoke(
        app,
        [
            "user",
            "add",
            "--username",
            "nurse.sun",
            "--role",
            "nurse",
            "--org",
            "TFRM",
            "--ward",
            "ICU",
            "--display-name",
            "孙护士",
            "--password-stdin",
        ],
        input="Night-shift-2026\n",
    )
    assert result.exit_code == 0, result.output
    with kernel.sessions() as session:
        user = session.scalars(select(User).where(User.username == "nurse.sun")).one()
        assert [w.code for w in user.wards] == ["ICU"]
    weak = runner.invoke(
        app,
        ["user", "add", "--username", "nurse.weak", "--role", "nurse", "--org", "TFRM", "--password-stdin"],
        input="123\n",
    )
    assert weak.exit_code == 1
    assert "at least" in weak.output
    ambiguous = runner.invoke(
        app,
        ["user", "add", "--username", "x.y", "--role", "nurse", "--password-stdin"],
        input="Night-shift-2026\n",
    )
    assert "--org" in ambiguous.output


def test_audit_verify_detects_tampering(env: dict[str, str], kernel: Kernel) -> None:
    intact = runner.invoke(app, ["audit", "verify"])
    assert intact.exit_code == 0, intact.output
    assert "intact" in intact.output
    with kernel.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER audit_record_no_update"))
        connection.execute(text("UPDATE audit_record SET actor_username = 'nobody' WHERE seq = 3"))
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "record 3" in broken.output


def test_audit_export_is_a_fhir_bundle(env: dict[str, str]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    result = runner.invoke(app, ["audit", "export", "--limit", "5"])
    assert result.exit_code == 0, result.output
    bundle = Bundle.model_validate(json.loads(result.output))
    assert bundle.type == "collection"
    assert len(bundle.entry) == 5
    assert bundle.entry[0].resource.get_resource_type() == "AuditEvent"


def test_user_unlock(env: dict[str, str], kernel: Kernel) -> None:
    from datetime import timedelta

    from tianfu.core.db import utcnow

    with kernel.sessions() as session:
        user = session.scalars(select(User).where(User.username == "nurse.li")).one()
        user.locked_until = utcnow() + timedelta(minutes=10)
        session.commit()
    assert runner.invoke(app, ["user", "unlock", "nurse.li"]).exit_code == 0
    with kernel.sessions() as session:
        assert session.scalars(select(User).where(User.username == "nurse.li")).one().locked_until is None


def test_bus_tail_needs_nats(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["bus", "tail"])
    assert result.exit_code == 2
    assert "nats://" in result.output


def test_checkpoint_then_verify_against_it(env: dict[str, str], tmp_path: Path, kernel: Kernel) -> None:
    checkpoints = tmp_path / "checkpoints.jsonl"
    taken = runner.invoke(app, ["audit", "checkpoint", "--append", str(checkpoints)])
    assert taken.exit_code == 0, taken.output
    point = json.loads(taken.output)
    assert set(point) == {"seq", "hash", "taken_at", "mac"}
    assert runner.invoke(app, ["audit", "verify", "--checkpoints", str(checkpoints)]).exit_code == 0
    with kernel.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER audit_record_no_update"))
        connection.execute(text("UPDATE audit_record SET hash = 'x' WHERE seq = :seq"), {"seq": point["seq"]})
    broken = runner.invoke(app, ["audit", "verify", "--checkpoints", str(checkpoints)])
    assert broken.exit_code == 1
    assert f"record {point['seq']} differs from checkpoint" in broken.output
