"""The append-only audit trail: one row per action, chained by HMAC-SHA256."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, UTCDateTime

GENESIS_HASH = "0" * 64


class AuditRecord(Base):
    __tablename__ = "audit_record"
    __table_args__ = (Index("ix_audit_record_actor_time", "actor_user_id", "recorded_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_user_id: Mapped[str | None] = mapped_column(String(36))
    actor_username: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(20))
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. patient.read, user.login_failed
    action_type: Mapped[str] = mapped_column(String(1))  # FHIR AuditEvent.action: C R U D E
    resource_type: Mapped[str] = mapped_column(String(64), default="")
    resource_id: Mapped[str] = mapped_column(String(128), default="")
    patient_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose: Mapped[str] = mapped_column(String(20), default="")  # v3 PurposeOfUse code
    outcome: Mapped[int] = mapped_column(Integer, default=0)  # FHIR: 0 ok, 4 minor, 8 serious, 12 major
    outcome_desc: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPatientLink(Base):
    """Index from a patient to the audit records that touched them ("who accessed my record")."""

    __tablename__ = "audit_patient_link"

    patient_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(ForeignKey("audit_record.seq"), primary_key=True)


class AuditChainHead(Base):
    """One row: the last sequence number and hash, so that deleting the newest records is detected.

    ``mac`` authenticates the pair with the chain key: without the key, the head cannot be moved back.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64), default="")
