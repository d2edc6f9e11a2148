"""Every model output and the clinician's later verdict on it: the raw material of field monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class ModelOutput(Base):
    __tablename__ = "model_output"
    __table_args__ = (Index("ix_model_output_model_time", "model_name", "created_at"),)

    id: Mapped[str] = IdColumn()
    module: Mapped[str] = mapped_column(String(32))  # monitoring, triage, imaging ...
    task: Mapped[str] = mapped_column(String(64))  # e.g. pneumonia, news2, department
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"), index=True)
    input_ref: Mapped[str] = mapped_column(String(300))  # what was scored, e.g. "ImagingStudy/1.2.3"
    input_features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # summaries for drift
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(100), default="")  # the top class or finding
    score: Mapped[float | None] = mapped_column(Float)  # its probability or score
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    requested_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))

    feedback: Mapped[list[ModelFeedback]] = relationship(
        back_populates="output", order_by="ModelFeedback.created_at"
    )


class ModelFeedback(Base):
    """A clinician agrees with, partly agrees with, or corrects an output; never edits it."""

    __tablename__ = "model_feedback"

    id: Mapped[str] = IdColumn()
    output_id: Mapped[str] = mapped_column(ForeignKey("model_output.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    verdict: Mapped[str] = mapped_column(String(10))  # agree | partial | disagree
    corrected_label: Mapped[str] = mapped_column(String(100), default="")
    corrected_output: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    output: Mapped[ModelOutput] = relationship(back_populates="feedback")
