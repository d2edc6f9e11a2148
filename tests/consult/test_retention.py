"""Retention classes, legal hold and the guard that no consult record is ever hard-deleted (SEC-08)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.consult.test_api import _consent, _draft
from tianfu.consult import retention
from tianfu.consult.retention import DeletionForbidden, RetentionClass, add_years, disposable, retain_until
from tianfu.consult.tables import Consultation, ConsultConsent, ConsultMessage, CooperationAgreement
from tianfu.core.kernel import Kernel
from tianfu.core.models import all_metadata


def test_classes_and_dates() -> None:
    at = datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
    assert retain_until(RetentionClass.CLINICAL, at) == datetime(2056, 5, 4, 10, 30, tzinfo=UTC)
    assert retain_until(RetentionClass.PROCESS, at) == datetime(2029, 5, 4, 10, 30, tzinfo=UTC)
    # 29 February: never shortened.
    assert add_years(datetime(2028, 2, 29, tzinfo=UTC), 3) == datetime(2031, 3, 1, tzinfo=UTC)
    assert add_years(datetime(2028, 2, 29, tzinfo=UTC), 4) == datetime(2032, 2, 29, tzinfo=UTC)


def test_disposable_only_past_retention_and_not_held() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC)
    assert not disposable(until, False, until - timedelta(seconds=1))
    assert disposable(until, False, until)
    assert not disposable(until, True, until + timedelta(days=1000))
    assert not disposable(None, False, until)


def test_every_consult_table_has_a_class() -> None:
    consult_tables = {
        name
        for name, table in all_metadata().tables.items()
        if name.startswith("consult") and not name.startswith("consultant")
    }
    assert consult_tables == set(retention.TABLE_RETENTION)


@pytest.fixture
def consultation(client: TestClient, db: Session, demo: Demo) -> str:
    cid, huang = _draft(client, db, demo)
    _consent(client, cid, huang, "treatment")
    return cid


def test_rows_are_stamped_at_creation(kernel: Kernel, consultation: str) -> None:
    with kernel.sessions() as session:
        row = session.get(Consultation, consultation)
        assert row is not None
        assert row.retain_until == add_years(row.created_at, 30)
        consent = session.scalars(
            select(ConsultConsent).where(ConsultConsent.consultation_id == consultation)
        ).one()
        assert consent.retain_until == add_years(consent.recorded_at, 30)


def test_orm_deletes_are_refused(kernel: Kernel, consultation: str) -> None:
    with kernel.sessions() as session:
        row = session.get(Consultation, consultation)
        session.delete(row)
        with pytest.raises(DeletionForbidden):
            session.flush()
        session.rollback()
    for statement in (
        delete(Consultation).where(Consultation.id == consultation),
        delete(ConsultConsent),
        delete(ConsultMessage),
        delete(CooperationAgreement),
    ):
        with kernel.sessions() as session, pytest.raises(DeletionForbidden):
            session.execute(statement)
    with kernel.sessions() as session:
        assert session.get(Consultation, consultation) is not None


def test_past_retention_lists_unheld_records_only(kernel: Kernel, consultation: str) -> None:
    with kernel.sessions() as session:
        row = session.get(Consultation, consultation)
        assert row is not None
        later = row.created_at + timedelta(days=365 * 31)
        due = retention.past_retention(session, later)
        assert {(d.table, d.consultation_id) for d in due} == {
            ("consultation", consultation),
            ("consult_consent", consultation),
        }
        assert retention.past_retention(session, row.created_at + timedelta(days=1)) == []
    with kernel.sessions() as session, session.begin():
        held = session.get(Consultation, consultation)
        assert held is not None
        held.legal_hold = True
    with kernel.sessions() as session:
        assert retention.past_retention(session, later) == []
