"""Typed settings, read from ``TIANFU_*`` environment variables (and ``.env`` if present).

Outside demo mode the platform refuses to start without a real secret key: a hospital must never run
on a key that is printed in a README.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Keys that appear in documentation, templates or tutorials; never acceptable in production.
KNOWN_WEAK_SECRETS = frozenset(
    {"changethis", "change-me", "changeme", "secret", "demo", "tianfu", "password", "development"}
)
MIN_SECRET_LENGTH = 32

ROLE_NAMES = ("nurse", "physician", "radiologist", "consultant", "admin", "auditor", "patient")


class InsecureConfiguration(ValueError):
    """The configuration would be unsafe to run with patient data."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIANFU_", env_file=".env", extra="ignore")

    demo: bool = Field(False, description="Demo mode: seeds demo data and allows a generated secret key.")
    secret_key: SecretStr | None = Field(None, description="Signs sessions and keys the audit chain.")
    audit_key: SecretStr | None = Field(
        None, description="HMAC key of the audit hash chain; derived from the secret key when unset."
    )
    database_url: str = Field(
        "sqlite:///./var/tianfu.db", description="SQLAlchemy URL (SQLite or PostgreSQL)."
    )
    bus_url: str = Field("memory://", description="memory:// (in-process) or nats://host:4222 (JetStream).")
    bus_stream: str = Field("TIANFU", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="JetStream stream name.")
    bus_namespace: str = Field(
        "",
        pattern=r"^[a-z0-9_]{0,40}$",
        description="Prefix of every subject on the NATS server (shared servers).",
    )
    var_dir: Path = Field(Path("var"), description="Directory for the SQLite file, uploads and keys.")
    host: str = "127.0.0.1"
    port: int = 8000
    default_locale: Literal["zh_CN", "en"] = "zh_CN"

    session_idle_minutes: int = Field(30, ge=1, description="Idle time after which a session ends.")
    session_max_hours: int = Field(12, ge=1, description="Absolute lifetime of a web session or API token.")
    lockout_threshold: int = Field(5, ge=1, description="Consecutive failed logins that lock an account.")
    lockout_minutes: int = Field(15, ge=1, description="How long a locked account stays locked.")
    totp_required_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Roles that must use a TOTP second factor, comma separated (e.g. physician,nurse).",
    )
    cookie_secure: bool = Field(False, description="Mark cookies Secure (set when served over HTTPS).")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")
    max_concurrent_requests: int = Field(
        0, ge=0, description="Requests run at once per process; 0: 2 on SQLite (one writer), 8 otherwise."
    )
    break_glass_minutes: int = Field(240, ge=5, description="How long an emergency-access grant lasts.")

    @model_validator(mode="before")
    @classmethod
    def _split_roles(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("totp_required_roles")
            if isinstance(raw, str):
                data["totp_required_roles"] = [r.strip() for r in raw.split(",") if r.strip()]
        return data

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        unknown = set(self.totp_required_roles) - set(ROLE_NAMES)
        if unknown:
            raise ValueError(f"TIANFU_TOTP_REQUIRED_ROLES names unknown roles: {sorted(unknown)}")
        if self.demo:
            return self
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key:
            raise InsecureConfiguration(
                "TIANFU_SECRET_KEY is not set. Outside demo mode set it to at least "
                f"{MIN_SECRET_LENGTH} random characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'), or set TIANFU_DEMO=1 for a demo."
            )
        if key.lower() in KNOWN_WEAK_SECRETS or len(key) < MIN_SECRET_LENGTH:
            raise InsecureConfiguration(
                f"TIANFU_SECRET_KEY is a default or shorter than {MIN_SECRET_LENGTH} characters; "
                "refusing to start outside demo mode."
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The secret key; in demo mode without one, a random key kept under ``var_dir``."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        path = self.var_dir / "demo-secret.key"
        if path.exists():
            return path.read_text().strip()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
