"""Migrations go up and down, and describe exactly the tables the code defines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, make_url

from tests.conftest import BACKEND, POSTGRES_URL, _pg_admin
from tianfu.core.db import make_engine
from tianfu.core.migrate import downgrade, head_revision, upgrade
from tianfu.core.models import all_metadata


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    from tests.conftest import mark_used

    mark_used(request, BACKEND)
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"tianfu_m_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with _pg_admin(POSTGRES_URL) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with _pg_admin(POSTGRES_URL) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    upgrade(empty_database)
    engine = make_engine(empty_database)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head_revision()
        assert "audit_record" in inspect(connection).get_table_names()
    downgrade(empty_database, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade(empty_database)
    with engine.connect() as connection:
        assert "patient" in inspect(connection).get_table_names()
    engine.dispose()


def test_models_and_migrations_agree(empty_database: str) -> None:
    upgrade(empty_database)
    engine = make_engine(empty_database)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, all_metadata())
    engine.dispose()
    assert differences == [], "write a migration: `alembic revision --autogenerate` finds differences"
