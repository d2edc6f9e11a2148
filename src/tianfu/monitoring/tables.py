"""Monitoring's tables: devices and their beds, stored vital signs, alarm episodes and their history,
per-patient monitoring orders, nursing observations, and the alarm engines' saved state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for high-volume tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class MonitoringDevice(Base):
    """A bedside monitor, wearable or gateway, and the bed it serves (none: its data is unassociated)."""

    __tablename__ = "monitoring_device"

    id: Mapped[str] = IdColumn()
    identifier: Mapped[str] = mapped_column(String(100), unique=True)  # EUI-64, serial, MQTT client id
    kind: Mapped[str] = mapped_column(String(20), default="monitor")  # monitor | wearable | gateway
    label: Mapped[str] = mapped_column(String(100), default="")
    manufacturer: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(100), default="")
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    bed_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_source: Mapped[str] = mapped_column(String(20), default="")


class VitalSample(Base):
    """Stored vital signs: at most one row per bed per sampling interval (the live stream stays in memory).

    ``patient_id`` is empty when the device's bed had no admitted patient: such data is kept and shown as
    unassociated, never dropped.
    """

    __tablename__ = "vital_sample"
    __table_args__ = (
        Index("ix_vital_sample_patient_time", "patient_id", "observed_at"),
        Index("ix_vital_sample_bed_time", "bed_id", "observed_at"),
        # One row per device, resolution and time: a report processed twice (after a worker restart) is
        # stored once.
        Index("uq_vital_sample_device_time", "device_id", "resolution", "observed_at", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resolution: Mapped[str] = mapped_column(String(8), default="minute")  # minute | hour (downsampled)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    device_id: Mapped[str | None] = mapped_column(ForeignKey("monitoring_device.id"))
    bed_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"))
    heart_rate: Mapped[float | None] = mapped_column(Float)
    pulse_rate: Mapped[float | None] = mapped_column(Float)
    spo2: Mapped[float | None] = mapped_column(Float)
    respiratory_rate: Mapped[float | None] = mapped_column(Float)
    systolic_bp: Mapped[float | None] = mapped_column(Float)
    diastolic_bp: Mapped[float | None] = mapped_column(Float)
    mean_bp: Mapped[float | None] = mapped_column(Float)
    temperature: Mapped[float | None] = mapped_column(Float)
    etco2: Mapped[float | None] = mapped_column(Float)
    news2: Mapped[int | None] = mapped_column(Integer)
    news2_partial: Mapped[bool] = mapped_column(Boolean, default=False)
    sepsis_risk: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(20), default="")
    flags: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict
    )  # sensor-off, implausible, unmapped codes


class AlarmEpisode(Base):
    """One alarm from raise to clear. The id comes from the alarm engine, so replays cannot duplicate it."""

    __tablename__ = "alarm_episode"
    __table_args__ = (Index("ix_alarm_episode_state_bed", "state", "bed_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    engine_episode_id: Mapped[str] = mapped_column(String(200), default="")
    bed_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("monitoring_device.id"))
    condition: Mapped[str] = mapped_column(String(64))  # e.g. spo2_low, news2, no_data
    kind: Mapped[str] = mapped_column(String(16))  # physiological | technical
    priority: Mapped[str] = mapped_column(String(8))  # high | medium | low
    state: Mapped[str] = mapped_column(String(16))  # active | acknowledged | paused | cleared
    message: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    latching: Mapped[bool] = mapped_column(Boolean, default=False)


class AlarmEvent(Base):
    """The history of an episode: raised, escalated, acknowledged, paused, cleared — who and when."""

    __tablename__ = "alarm_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("alarm_episode.id"), index=True)
    event: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)  # episode + event + time: replay-safe


class MonitoringProfile(Base):
    """A patient's monitoring orders: adult or paediatric limits, SpO2 scale 2 (only on a clinician's
    order, with who and when), and per-patient alarm limits."""

    __tablename__ = "monitoring_profile"

    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), primary_key=True)
    population: Mapped[str] = mapped_column(String(12), default="adult")  # adult | paediatric
    spo2_scale: Mapped[int] = mapped_column(Integer, default=1)
    spo2_scale_ordered_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    spo2_scale_ordered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class NursingObservation(Base):
    """What monitors cannot measure and NEWS2 needs: consciousness (ACVPU) and supplemental oxygen."""

    __tablename__ = "nursing_observation"
    __table_args__ = (Index("ix_nursing_observation_patient_time", "patient_id", "observed_at"),)

    id: Mapped[str] = IdColumn()
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    kind: Mapped[str] = mapped_column(String(20))  # consciousness | oxygen
    value: Mapped[str] = mapped_column(String(20))  # A C V P U | air | oxygen
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))


class EngineSnapshot(Base):
    """The alarm engine of one bed, saved so that another worker can take over where this one stopped."""

    __tablename__ = "monitoring_engine_snapshot"

    partition_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
