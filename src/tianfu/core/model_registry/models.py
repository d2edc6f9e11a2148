"""One row per model version Tianfu knows, shipped in the repo or imported by an admin."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class ModelVersion(Base):
    __tablename__ = "ai_model_version"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_ai_model_version_name_version"),)

    id: Mapped[str] = IdColumn()
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(64))
    module: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(10))  # shipped | imported
    directory: Mapped[str] = mapped_column(String(500), default="")  # imported versions only
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    changed_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
