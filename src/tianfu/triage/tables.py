"""Triage's tables: an interview (session) per visit, and every urgency assessment made for it.

An assessment is never overwritten: the AI's suggestion, the nurse's decision and every re-triage after
a deterioration are rows of their own (TRI-02, TRI-04).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class TriageSession(Base):
    __tablename__ = "triage_session"
    __table_args__ = (Index("ix_triage_session_queue", "organization_id", "status", "created_at"),)

    id: Mapped[str] = IdColumn()
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"), index=True)
    visitor_label: Mapped[str] = mapped_column(String(100), default="")  # a walk-in not yet registered
    channel: Mapped[str] = mapped_column(String(20))  # self_service | nurse
    # interviewing -> waiting (result shown, in the nurse's queue) -> confirmed -> sent
    status: Mapped[str] = mapped_column(String(20), default="interviewing")
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # interview.Interview.to_json()
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # interview.Result.to_json()
    ai_output_id: Mapped[str | None] = mapped_column(String(36))
    level: Mapped[int | None] = mapped_column(Integer)  # the level in force (nurse's, else the rules')
    department_code: Mapped[str] = mapped_column(String(40), default="")
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TriageAssessment(Base):
    __tablename__ = "triage_assessment"

    id: Mapped[str] = IdColumn()
    session_id: Mapped[str] = mapped_column(ForeignKey("triage_session.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # ai | nurse | retriage
    level: Mapped[int | None] = mapped_column(Integer)
    suggested_level: Mapped[int | None] = mapped_column(Integer)  # what the rules and model suggested
    department_code: Mapped[str] = mapped_column(String(40), default="")
    reason: Mapped[str] = mapped_column(Text, default="")  # the nurse's reason for an override
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # vital signs, pain, rules version
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
