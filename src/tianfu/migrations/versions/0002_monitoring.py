"""monitoring: devices, vital samples, alarms, orders, charting

Revision ID: 0002_monitoring
Revises: 0001_kernel
Create Date: 2026-11-27 07:54:52.664813
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tianfu.core.db

revision: str = "0002_monitoring"
down_revision: str | Sequence[str] | None = "0001_kernel"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitoring_engine_snapshot",
        sa.Column("partition_key", sa.String(length=100), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("saved_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition_key", name=op.f("pk_monitoring_engine_snapshot")),
    )
    op.create_table(
        "monitoring_device",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("identifier", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("manufacturer", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("bed_id", sa.String(length=36), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("registered_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_source", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["bed_id"], ["location.id"], name=op.f("fk_monitoring_device_bed_id_location")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_monitoring_device_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_device")),
        sa.UniqueConstraint("identifier", name=op.f("uq_monitoring_device_identifier")),
    )
    with op.batch_alter_table("monitoring_device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitoring_device_bed_id"), ["bed_id"], unique=False)

    op.create_table(
        "alarm_episode",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("engine_episode_id", sa.String(length=200), nullable=False),
        sa.Column("bed_id", sa.String(length=36), nullable=True),
        sa.Column("patient_id", sa.String(length=36), nullable=True),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("condition", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("raised_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by_id", sa.String(length=36), nullable=True),
        sa.Column("cleared_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("latching", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["acknowledged_by_id"], ["app_user.id"], name=op.f("fk_alarm_episode_acknowledged_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(["bed_id"], ["location.id"], name=op.f("fk_alarm_episode_bed_id_location")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["monitoring_device.id"], name=op.f("fk_alarm_episode_device_id_monitoring_device")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_alarm_episode_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_episode")),
    )
    with op.batch_alter_table("alarm_episode", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_episode_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index("ix_alarm_episode_state_bed", ["state", "bed_id"], unique=False)

    op.create_table(
        "monitoring_profile",
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("population", sa.String(length=12), nullable=False),
        sa.Column("spo2_scale", sa.Integer(), nullable=False),
        sa.Column("spo2_scale_ordered_by_id", sa.String(length=36), nullable=True),
        sa.Column("spo2_scale_ordered_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_monitoring_profile_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["spo2_scale_ordered_by_id"],
            ["app_user.id"],
            name=op.f("fk_monitoring_profile_spo2_scale_ordered_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_monitoring_profile")),
    )
    op.create_table(
        "nursing_observation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("value", sa.String(length=20), nullable=False),
        sa.Column("observed_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_nursing_observation_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["app_user.id"], name=op.f("fk_nursing_observation_recorded_by_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nursing_observation")),
    )
    with op.batch_alter_table("nursing_observation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_nursing_observation_patient_time", ["patient_id", "observed_at"], unique=False
        )

    op.create_table(
        "vital_sample",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resolution", sa.String(length=8), nullable=False),
        sa.Column("observed_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("bed_id", sa.String(length=36), nullable=True),
        sa.Column("patient_id", sa.String(length=36), nullable=True),
        sa.Column("heart_rate", sa.Float(), nullable=True),
        sa.Column("pulse_rate", sa.Float(), nullable=True),
        sa.Column("spo2", sa.Float(), nullable=True),
        sa.Column("respiratory_rate", sa.Float(), nullable=True),
        sa.Column("systolic_bp", sa.Float(), nullable=True),
        sa.Column("diastolic_bp", sa.Float(), nullable=True),
        sa.Column("mean_bp", sa.Float(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("etco2", sa.Float(), nullable=True),
        sa.Column("news2", sa.Integer(), nullable=True),
        sa.Column("news2_partial", sa.Boolean(), nullable=False),
        sa.Column("sepsis_risk", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["bed_id"], ["location.id"], name=op.f("fk_vital_sample_bed_id_location")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["monitoring_device.id"], name=op.f("fk_vital_sample_device_id_monitoring_device")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_vital_sample_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vital_sample")),
    )
    with op.batch_alter_table("vital_sample", schema=None) as batch_op:
        batch_op.create_index("ix_vital_sample_bed_time", ["bed_id", "observed_at"], unique=False)
        batch_op.create_index("ix_vital_sample_patient_time", ["patient_id", "observed_at"], unique=False)
        batch_op.create_index(
            "uq_vital_sample_device_time", ["device_id", "resolution", "observed_at"], unique=True
        )

    op.create_table(
        "alarm_event",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["alarm_episode.id"], name=op.f("fk_alarm_event_episode_id_alarm_episode")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_alarm_event_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_event")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_alarm_event_dedup_key")),
    )
    with op.batch_alter_table("alarm_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_event_episode_id"), ["episode_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alarm_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_event_episode_id"))

    op.drop_table("alarm_event")
    with op.batch_alter_table("vital_sample", schema=None) as batch_op:
        batch_op.drop_index("uq_vital_sample_device_time")
        batch_op.drop_index("ix_vital_sample_patient_time")
        batch_op.drop_index("ix_vital_sample_bed_time")

    op.drop_table("vital_sample")
    with op.batch_alter_table("nursing_observation", schema=None) as batch_op:
        batch_op.drop_index("ix_nursing_observation_patient_time")

    op.drop_table("nursing_observation")
    op.drop_table("monitoring_profile")
    with op.batch_alter_table("alarm_episode", schema=None) as batch_op:
        batch_op.drop_index("ix_alarm_episode_state_bed")
        batch_op.drop_index(batch_op.f("ix_alarm_episode_patient_id"))

    op.drop_table("alarm_episode")
    with op.batch_alter_table("monitoring_device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitoring_device_bed_id"))

    op.drop_table("monitoring_device")
    op.drop_table("monitoring_engine_snapshot")
