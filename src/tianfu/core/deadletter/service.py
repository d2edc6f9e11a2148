"""Keep rejected input so that nothing is lost, and let an admin list and resolve it."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tianfu.core.db import utcnow
from tianfu.core.deadletter.models import DeadLetter


def store(
    session: Session, *, source: str, reason: str, payload: bytes | str, meta: dict[str, Any] | None = None
) -> DeadLetter:
    if isinstance(payload, bytes):
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode(), "base64"
    else:
        text, encoding = payload, "utf-8"
    row = DeadLetter(source=source, reason=reason, payload=text, payload_encoding=encoding, meta=meta or {})
    session.add(row)
    session.flush()
    return row


def raw_bytes(row: DeadLetter) -> bytes:
    return base64.b64decode(row.payload) if row.payload_encoding == "base64" else row.payload.encode()


def listing(*, source: str | None = None, unresolved_only: bool = True) -> Select[DeadLetter]:
    query = select(DeadLetter).order_by(DeadLetter.received_at.desc())
    if source:
        query = query.where(DeadLetter.source == source)
    if unresolved_only:
        query = query.where(DeadLetter.resolved_at.is_(None))
    return query


def resolve(session: Session, row: DeadLetter, *, by: str, note: str) -> None:
    row.resolved_at = utcnow()
    row.resolved_by = by
    row.resolution_note = note
