"""The dead-letter store: input the platform could not accept, kept whole for an admin to review."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class DeadLetter(Base):
    __tablename__ = "dead_letter"

    id: Mapped[str] = IdColumn()
    source: Mapped[str] = mapped_column(String(40), index=True)  # bus, hl7-mllp, mqtt, fhir ...
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the raw input, as received (text or base64)
    payload_encoding: Mapped[str] = mapped_column(String(10), default="utf-8")  # utf-8 | base64
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str] = mapped_column(String(64), default="")
    resolution_note: Mapped[str] = mapped_column(Text, default="")
