"""Test harness.

- Tests cannot reach the network: only loopback and Unix sockets connect.
- Each test that touches the database gets its own copy of a migrated database seeded with the demo
  hospital: a copied SQLite file by default, or a PostgreSQL database cloned from a template when
  ``TIANFU_TEST_DATABASE_URL`` names a PostgreSQL server (``make test`` does a second pass that way).
- Tests that need NATS or Chromium skip when those are absent, unless ``TIANFU_REQUIRE_SERVICES=1``
  (set by ``.ci/run``), in which case their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Hermetic settings: no TIANFU_* from the developer's shell or a .env file leaks into tests.
for _name in list(os.environ):
    if _name.startswith("TIANFU_") and not _name.startswith(("TIANFU_TEST_", "TIANFU_REQUIRE_")):
        del os.environ[_name]
os.environ["TIANFU_HL7_PORT"] = "0"  # apps under test open no listener; listener tests bind their own port
os.environ["TIANFU_DICOM_PORT"] = "0"

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import make_url, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from tianfu.app import create_app  # noqa: E402
from tianfu.core.identity.models import User  # noqa: E402
from tianfu.core.kernel import Kernel  # noqa: E402
from tianfu.core.migrate import upgrade  # noqa: E402
from tianfu.core.patients.models import Location, Organization, Patient  # noqa: E402
from tianfu.core.settings import Settings  # noqa: E402
from tianfu.demo import seed  # noqa: E402

TEST_SECRET = "test-secret-key-that-is-long-enough-for-the-settings-0123456789"
POSTGRES_URL = os.environ.get("TIANFU_TEST_DATABASE_URL", "")
NATS_URL = os.environ.get("TIANFU_TEST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_URL = os.environ.get("TIANFU_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
CHROMIUM = os.environ.get("TIANFU_TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRE_SERVICES = os.environ.get("TIANFU_REQUIRE_SERVICES") == "1"
BACKEND = "postgresql" if POSTGRES_URL else "sqlite"

# --- no network ----------------------------------------------------------------------------------------

_real_connect = socket.socket.connect
_LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}  # noqa: S104 - compared against, never bound


class NetworkBlocked(RuntimeError):
    pass


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
        raise NetworkBlocked(f"tests may not reach the network ({address[0]})")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


# --- service availability --------------------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (TIANFU_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} is not available here; set it up or run .ci/run")


_used: dict[str, set[str]] = {
    "postgresql": set(),
    "nats": set(),
    "mqtt": set(),
    "browser": set(),
    "sqlite": set(),
}


def mark_used(request: pytest.FixtureRequest, service: str) -> None:
    _used[service].add(request.node.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    passed = {r.nodeid for r in terminalreporter.stats.get("passed", [])}
    lines = []
    for service, label in (
        ("sqlite", "SQLite"),
        ("postgresql", "PostgreSQL"),
        ("nats", "NATS JetStream"),
        ("mqtt", "MQTT broker"),
        ("browser", "Chromium"),
    ):
        used = _used[service]
        if used:
            lines.append(f"{label}: {len(used & passed)} of {len(used)} tests using it passed")
    if lines:
        terminalreporter.write_sep("-", "services exercised")
        for line in lines:
            terminalreporter.write_line(line)


# --- databases -------------------------------------------------------------------------------------------


@dataclass
class Template:
    url: str  # a migrated, demo-seeded database to copy for each test
    admin_url: str | None  # PostgreSQL: where CREATE DATABASE runs


def _settings(database_url: str, var_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        demo=False,
        secret_key=TEST_SECRET,
        database_url=database_url,
        var_dir=var_dir,
        bus_url="memory://",
        **overrides,
    )


def _pg_admin(url: str) -> Any:
    import psycopg

    parsed = make_url(url).set(drivername="postgresql")
    return psycopg.connect(parsed.render_as_string(hide_password=False), autocommit=True)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    var_dir = tmp_path_factory.mktemp("template")
    if BACKEND == "sqlite":
        url = f"sqlite:///{var_dir / 'template.db'}"
        admin = None
    else:
        name = f"tianfu_tmpl_{uuid.uuid4().hex[:10]}"
        with _pg_admin(POSTGRES_URL) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        admin = POSTGRES_URL
    upgrade(url)
    kernel = Kernel(_settings(url, var_dir))
    seed(kernel)
    kernel.engine.dispose()
    yield Template(url=url, admin_url=admin)
    if admin is not None:
        with _pg_admin(admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@pytest.fixture
def database_url(request: pytest.FixtureRequest, template: Template, tmp_path: Path) -> Iterator[str]:
    """A private copy of the demo database for this test."""
    mark_used(request, BACKEND)
    if template.admin_url is None:
        source = make_url(template.url).database
        assert source is not None
        target = tmp_path / "tianfu.db"
        shutil.copyfile(source, target)
        yield f"sqlite:///{target}"
        return
    name = f"tianfu_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin(template.admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template.url).database}"')
    yield make_url(template.url).set(database=name).render_as_string(hide_password=False)
    with _pg_admin(template.admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return _settings(database_url, tmp_path)


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    return lambda **overrides: _settings(database_url, tmp_path, **overrides)


@pytest.fixture
def kernel(settings: Settings) -> Iterator[Kernel]:
    kernel = Kernel(settings)
    yield kernel
    kernel.engine.dispose()


@pytest.fixture
def db(kernel: Kernel) -> Iterator[Session]:
    with kernel.sessions() as session:
        yield session


@pytest.fixture
def client(kernel: Kernel, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, kernel=kernel)
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


# --- the demo hospital -----------------------------------------------------------------------------------


@dataclass
class Demo:
    """Looks up demo records by their human names. Each lookup ends its transaction at once: on SQLite
    an open transaction holds the write lock, which would block the code under test."""

    session: Session

    def _one(self, stmt: Any) -> Any:
        row = self.session.scalars(stmt).one()
        self.session.commit()
        return row

    def user(self, username: str) -> User:
        user: User = self._one(select(User).where(User.username == username))
        return user

    def patient(self, name: str) -> Patient:
        patient: Patient = self._one(select(Patient).where(Patient.name == name))
        return patient

    def ward(self, code: str) -> Location:
        ward: Location = self._one(select(Location).where(Location.code == code, Location.kind == "ward"))
        return ward

    def bed(self, code: str) -> Location:
        bed: Location = self._one(select(Location).where(Location.code == code, Location.kind == "bed"))
        return bed

    def organization(self, code: str) -> Organization:
        organization: Organization = self._one(select(Organization).where(Organization.code == code))
        return organization


@pytest.fixture
def demo(db: Session) -> Demo:
    return Demo(db)


@pytest.fixture
def token_for(kernel: Kernel) -> Callable[[str], dict[str, str]]:
    """Bearer headers for a demo user. Sign-in itself is tested elsewhere; this skips the deliberate
    argon2 cost so that the many API tests stay fast."""
    cache: dict[str, dict[str, str]] = {}

    def login(username: str) -> dict[str, str]:
        if username not in cache:
            with kernel.sessions() as session:
                cache[username] = issue_token(session, username)
        return cache[username]

    return login


# --- services --------------------------------------------------------------------------------------------


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> str:
    parsed = make_url(NATS_URL.replace("nats://", "nats+x://"))
    require_service(_port_open(parsed.host or "127.0.0.1", parsed.port or 4222), f"NATS at {NATS_URL}")
    mark_used(request, "nats")
    return NATS_URL


@pytest.fixture
def mqtt_url(request: pytest.FixtureRequest) -> str:
    parsed = make_url(MQTT_URL.replace("mqtt://", "mqtt+x://"))
    require_service(_port_open(parsed.host or "127.0.0.1", parsed.port or 1883), f"MQTT broker at {MQTT_URL}")
    mark_used(request, "mqtt")
    return MQTT_URL


@pytest.fixture
def chromium(request: pytest.FixtureRequest) -> str:
    require_service(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    mark_used(request, "browser")
    return CHROMIUM


def issue_token(session: Session, username: str) -> dict[str, str]:
    """Bearer headers for a demo user without the cost of a password check (fast, for big matrices)."""
    import secrets
    from datetime import timedelta

    from tianfu.core.db import utcnow
    from tianfu.core.identity.models import AuthSession
    from tianfu.core.identity.service import token_hash

    user = session.scalars(select(User).where(User.username == username)).one()
    token = secrets.token_urlsafe(24)
    now = utcnow()
    session.add(
        AuthSession(
            token_hash=token_hash(token),
            user_id=user.id,
            kind="api",
            csrf_token="-",
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    session.commit()
    return {"Authorization": f"Bearer {token}"}
