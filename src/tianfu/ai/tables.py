"""The AI platform's own records: local validation runs and field-performance alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class ValidationRun(Base):
    """A model version run on a hospital's own labelled data, with its report (HTML and PDF)."""

    __tablename__ = "ai_validation_run"

    id: Mapped[str] = IdColumn()
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64))
    dataset_name: Mapped[str] = mapped_column(String(200))
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued | running | done | failed
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_html: Mapped[str] = mapped_column(Text, default="")
    report_pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)  # its worker's last sign
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))


class AlertRecord(Base):
    """Agreement or input drift crossed its threshold; open until the condition clears."""

    __tablename__ = "ai_field_alert"

    id: Mapped[str] = IdColumn()
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # agreement | drift
    subject: Mapped[str] = mapped_column(String(100), default="")  # the drifting input, for drift
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)  # an English msgid, formatted with ``variables``
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
