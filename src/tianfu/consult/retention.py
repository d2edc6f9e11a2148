"""How long consultation records are kept, legal hold, and the guard that nothing is hard-deleted (SEC-08).

Retention classes (docs §3):

- ``clinical``: the consultation (request, task, history), the signed opinion and the consents: **30
  years**. Whether the patient was an inpatient (30 y from discharge) or an outpatient (15 y from the
  last visit) is the inviting institution's record, not ours, and a consultation can move from one to
  the other; the longer period satisfies both rules, so every consultation is kept for 30 years.
- ``process``: the store-and-forward discussion, its attachments, scheduling and deadline notices, the
  图文对话 record of 监管细则: **3 years**.
- Audit records live in the kernel's audit log under its own rules.
- Agreements, qualifications and signer keys are administrative records with no end: kept.

``retain_until`` is stamped when a row is first flushed (from its creation time); a legal hold (封存) on
the consultation keeps all its records past that date. Nothing is ever deleted automatically:
:func:`past_retention` only lists what could be reviewed for disposal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from tianfu.core.db import utcnow


class RetentionClass(StrEnum):
    CLINICAL = "clinical"  # consultation, opinion, consents: 30 years
    PROCESS = "process"  # messages, attachments, scheduling, notices: 3 years


RETENTION_YEARS = {RetentionClass.CLINICAL: 30, RetentionClass.PROCESS: 3}

# Every consult table and its class; None: an administrative record, kept without end.
TABLE_RETENTION: dict[str, RetentionClass | None] = {
    "consultation": RetentionClass.CLINICAL,
    "consult_status_change": RetentionClass.CLINICAL,  # kept with its consultation
    "consult_opinion_version": RetentionClass.CLINICAL,
    "consult_consent": RetentionClass.CLINICAL,
    "consult_message": RetentionClass.PROCESS,
    "consult_attachment": RetentionClass.PROCESS,
    "consult_appointment": RetentionClass.PROCESS,
    "consult_deadline_notice": RetentionClass.PROCESS,
    "consult_agreement": None,
    "consult_qualification": None,
    "consult_signer_key": None,
}
PROTECTED_TABLES = frozenset(TABLE_RETENTION)


def add_years(moment: datetime, years: int) -> datetime:
    """``moment`` plus whole calendar years; 29 February becomes 1 March (the period never shortens)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, month=3, day=1)


def retain_until(kind: RetentionClass, created_at: datetime) -> datetime:
    return add_years(created_at, RETENTION_YEARS[kind])


def disposable(retain_until_at: datetime | None, on_hold: bool, now: datetime) -> bool:
    """Past its retention and not held: a candidate for the records office's disposal review."""
    return retain_until_at is not None and not on_hold and now >= retain_until_at


class DeletionForbidden(RuntimeError):
    """A consult record was about to be hard-deleted: they are kept (SEC-08, 电子病历应用管理规范)."""


_CREATED = ("created_at", "sent_at", "recorded_at", "at")


def _stamp(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    for obj in session.deleted:
        table = getattr(obj, "__tablename__", "")
        if table in PROTECTED_TABLES:
            raise DeletionForbidden(f"{table} rows are never deleted (SEC-08)")
    for obj in session.new:
        kind = TABLE_RETENTION.get(getattr(obj, "__tablename__", ""))
        if kind is None or not hasattr(obj, "retain_until") or obj.retain_until is not None:
            continue
        created = next((getattr(obj, name) for name in _CREATED if getattr(obj, name, None)), None)
        obj.retain_until = retain_until(kind, created or utcnow())


def _refuse_bulk_delete(state: ORMExecuteState) -> None:
    if not state.is_delete:
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in PROTECTED_TABLES:
        raise DeletionForbidden(f"{table} rows are never deleted (SEC-08)")


def install() -> None:
    """Listen on every ORM session (idempotent)."""
    if not event.contains(Session, "before_flush", _stamp):
        event.listen(Session, "before_flush", _stamp)
    if not event.contains(Session, "do_orm_execute", _refuse_bulk_delete):
        event.listen(Session, "do_orm_execute", _refuse_bulk_delete)


@dataclass(frozen=True)
class DueRecord:
    table: str
    id: str
    consultation_id: str
    retain_until: datetime


def past_retention(session: Session, now: datetime | None = None, limit: int = 500) -> list[DueRecord]:
    """Records past their retention whose consultation is not on legal hold. Lists; never deletes."""
    from tianfu.consult.tables import (
        ConsultAppointment,
        Consultation,
        ConsultAttachment,
        ConsultConsent,
        ConsultDeadlineNotice,
        ConsultMessage,
        OpinionVersion,
    )

    now = now or utcnow()
    found: list[DueRecord] = []
    for row in session.scalars(
        select(Consultation)
        .where(Consultation.retain_until <= now, Consultation.legal_hold.is_(False))
        .limit(limit)
    ):
        assert row.retain_until is not None
        found.append(DueRecord("consultation", row.id, row.id, row.retain_until))
    models: Sequence[Any] = (
        ConsultConsent,
        OpinionVersion,
        ConsultMessage,
        ConsultAttachment,
        ConsultAppointment,
        ConsultDeadlineNotice,
    )
    for model in models:
        rows = session.execute(
            select(model.id, model.consultation_id, model.retain_until)
            .join(Consultation, Consultation.id == model.consultation_id)
            .where(model.retain_until <= now, Consultation.legal_hold.is_(False))
            .limit(limit)
        ).all()
        found.extend(DueRecord(model.__tablename__, r[0], r[1], r[2]) for r in rows)
    return found
