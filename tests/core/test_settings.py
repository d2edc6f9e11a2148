"""Settings refuse unsafe configurations outside demo mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tianfu.core.settings import Settings


def test_refuses_to_run_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIANFU_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="TIANFU_SECRET_KEY is not set"):
        Settings(demo=False)


@pytest.mark.parametrize("key", ["changethis", "secret", "short-but-random-9f8e"])
def test_refuses_default_or_short_keys(key: str) -> None:
    with pytest.raises(ValidationError, match="default or shorter"):
        Settings(demo=False, secret_key=key)


def test_accepts_a_long_random_key() -> None:
    settings = Settings(demo=False, secret_key="k" * 10 + "0123456789abcdefghijklmnopqrstuv")
    assert settings.resolved_secret_key().startswith("kkkk")


def test_demo_mode_generates_and_keeps_a_key(tmp_path: Path) -> None:
    first = Settings(demo=True, var_dir=tmp_path).resolved_secret_key()
    second = Settings(demo=True, var_dir=tmp_path).resolved_secret_key()
    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "demo-secret.key").stat().st_mode & 0o077 == 0


def test_reads_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIANFU_DEMO", "1")
    monkeypatch.setenv("TIANFU_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("TIANFU_TOTP_REQUIRED_ROLES", "physician, nurse")
    monkeypatch.setenv("TIANFU_SESSION_IDLE_MINUTES", "5")
    settings = Settings()
    assert settings.demo
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.totp_required_roles == ["physician", "nurse"]
    assert settings.session_idle_minutes == 5


def test_unknown_role_in_totp_policy_is_an_error() -> None:
    with pytest.raises(ValidationError, match="unknown roles"):
        Settings(demo=True, totp_required_roles="physician,wizard")
