"""kernel: identity, patients, audit, outbox, dead letters, model outputs

The audit tables are append-only in the database itself (triggers), on top of the hash chain.

Revision ID: 0001_kernel
Revises:
Create Date: 2026-11-27 06:46:57.131404
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tianfu.core.db

revision: str = "0001_kernel"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.String(length=36), nullable=True),
        sa.Column("actor_username", sa.String(length=64), nullable=False),
        sa.Column("actor_role", sa.String(length=20), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("action_type", sa.String(length=1), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("patient_ids", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("outcome_desc", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_record")),
    )
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_record_action"), ["action"], unique=False)
        batch_op.create_index("ix_audit_record_actor_time", ["actor_user_id", "recorded_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_record_recorded_at"), ["recorded_at"], unique=False)

    op.create_table(
        "dead_letter",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_encoding", sa.String(length=10), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("received_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=False),
        sa.Column("resolution_note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
    )
    with op.batch_alter_table("dead_letter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letter_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_dead_letter_source"), ["source"], unique=False)

    op.create_table(
        "organization",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("code", name=op.f("uq_organization_code")),
    )
    op.create_table(
        "outbox_event",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox_event")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_event_id")),
    )
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_event_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_event_published_at"), ["published_at"], unique=False)

    op.create_table(
        "processed_event",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("processed_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_processed_event")),
    )
    op.create_table(
        "audit_patient_link",
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["seq"], ["audit_record.seq"], name=op.f("fk_audit_patient_link_seq_audit_record")
        ),
        sa.PrimaryKeyConstraint("patient_id", "seq", name=op.f("pk_audit_patient_link")),
    )
    op.create_table(
        "location",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("specialty", sa.String(length=100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organization.id"], name=op.f("fk_location_organization_id_organization")
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["location.id"], name=op.f("fk_location_parent_id_location")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location")),
        sa.UniqueConstraint("organization_id", "code", name="uq_location_org_code"),
    )
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_location_organization_id"), ["organization_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_location_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "patient",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("mrn", sa.String(length=64), nullable=False),
        sa.Column("managing_organization_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("family_name", sa.String(length=50), nullable=False),
        sa.Column("given_name", sa.String(length=50), nullable=False),
        sa.Column("gender", sa.String(length=10), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("national_id", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("voided", sa.Boolean(), nullable=False),
        sa.Column("void_reason", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["managing_organization_id"],
            ["organization.id"],
            name=op.f("fk_patient_managing_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("managing_organization_id", "mrn", name="uq_patient_org_mrn"),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_managing_organization_id"), ["managing_organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_patient_mrn"), ["mrn"], unique=False)
        batch_op.create_index(batch_op.f("ix_patient_name"), ["name"], unique=False)

    op.create_table(
        "app_user",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("patient_id", sa.String(length=36), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("password_changed_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("failed_login_count", sa.Integer(), nullable=False),
        sa.Column("locked_until", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("totp_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=False),
        sa.Column("licence_number", sa.String(length=64), nullable=False),
        sa.Column("professional_title", sa.String(length=50), nullable=False),
        sa.Column("specialty", sa.String(length=100), nullable=False),
        sa.Column("practicing_since", sa.Date(), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organization.id"], name=op.f("fk_app_user_organization_id_organization")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_app_user_patient_id_patient")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
        sa.UniqueConstraint("patient_id", name=op.f("uq_app_user_patient_id")),
        sa.UniqueConstraint("username", name=op.f("uq_app_user_username")),
    )
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_app_user_organization_id"), ["organization_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_app_user_role"), ["role"], unique=False)

    op.create_table(
        "auth_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("mfa_pending", sa.Boolean(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_auth_session_user_id_app_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_auth_session")),
    )
    with op.batch_alter_table("auth_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_session_user_id"), ["user_id"], unique=False)

    op.create_table(
        "care_grant",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("granted_by_id", sa.String(length=36), nullable=True),
        sa.Column("starts_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["granted_by_id"], ["app_user.id"], name=op.f("fk_care_grant_granted_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_care_grant_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_care_grant_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_grant")),
    )
    with op.batch_alter_table("care_grant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_care_grant_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_care_grant_user_id"), ["user_id"], unique=False)

    op.create_table(
        "encounter",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=False),
        sa.Column("encounter_class", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ward_id", sa.String(length=36), nullable=True),
        sa.Column("bed_id", sa.String(length=36), nullable=True),
        sa.Column("attending_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("period_start", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", tianfu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["attending_id"], ["app_user.id"], name=op.f("fk_encounter_attending_id_app_user")
        ),
        sa.ForeignKeyConstraint(["bed_id"], ["location.id"], name=op.f("fk_encounter_bed_id_location")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organization.id"], name=op.f("fk_encounter_organization_id_organization")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_encounter_patient_id_patient")),
        sa.ForeignKeyConstraint(["ward_id"], ["location.id"], name=op.f("fk_encounter_ward_id_location")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encounter")),
    )
    with op.batch_alter_table("encounter", schema=None) as batch_op:
        batch_op.create_index("ix_encounter_active_ward", ["status", "ward_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_encounter_attending_id"), ["attending_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_encounter_bed_id"), ["bed_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_encounter_organization_id"), ["organization_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_encounter_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "model_output",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("module", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=True),
        sa.Column("input_ref", sa.String(length=300), nullable=False),
        sa.Column("input_features", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("requested_by_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_model_output_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"], ["app_user.id"], name=op.f("fk_model_output_requested_by_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_output")),
    )
    with op.batch_alter_table("model_output", schema=None) as batch_op:
        batch_op.create_index("ix_model_output_model_time", ["model_name", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_output_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "user_ward",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("location_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"], ["location.id"], name=op.f("fk_user_ward_location_id_location")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_user_ward_user_id_app_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "location_id", name=op.f("pk_user_ward")),
    )
    op.create_table(
        "model_feedback",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("output_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("verdict", sa.String(length=10), nullable=False),
        sa.Column("corrected_label", sa.String(length=100), nullable=False),
        sa.Column("corrected_output", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["output_id"], ["model_output.id"], name=op.f("fk_model_feedback_output_id_model_output")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_model_feedback_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_feedback")),
    )
    with op.batch_alter_table("model_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_feedback_output_id"), ["output_id"], unique=False)

    op.bulk_insert(
        sa.table(
            "audit_chain_head",
            sa.column("id"),
            sa.column("last_seq"),
            sa.column("last_hash"),
            sa.column("mac"),
        ),
        [{"id": 1, "last_seq": 0, "last_hash": "0" * 64, "mac": ""}],
    )
    for table in APPEND_ONLY_TABLES:
        _make_append_only(table)


APPEND_ONLY_TABLES = ("audit_record", "audit_patient_link")


def _make_append_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION tianfu_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tianfu_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tianfu_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'table {table} is append-only'); END"
            )


def downgrade() -> None:
    with op.batch_alter_table("model_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_feedback_output_id"))

    op.drop_table("model_feedback")
    op.drop_table("user_ward")
    with op.batch_alter_table("model_output", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_output_patient_id"))
        batch_op.drop_index("ix_model_output_model_time")

    op.drop_table("model_output")
    with op.batch_alter_table("encounter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_encounter_patient_id"))
        batch_op.drop_index(batch_op.f("ix_encounter_organization_id"))
        batch_op.drop_index(batch_op.f("ix_encounter_bed_id"))
        batch_op.drop_index(batch_op.f("ix_encounter_attending_id"))
        batch_op.drop_index("ix_encounter_active_ward")

    op.drop_table("encounter")
    with op.batch_alter_table("care_grant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_grant_user_id"))
        batch_op.drop_index(batch_op.f("ix_care_grant_patient_id"))

    op.drop_table("care_grant")
    with op.batch_alter_table("auth_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_session_user_id"))

    op.drop_table("auth_session")
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_user_role"))
        batch_op.drop_index(batch_op.f("ix_app_user_organization_id"))

    op.drop_table("app_user")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_name"))
        batch_op.drop_index(batch_op.f("ix_patient_mrn"))
        batch_op.drop_index(batch_op.f("ix_patient_managing_organization_id"))

    op.drop_table("patient")
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_location_parent_id"))
        batch_op.drop_index(batch_op.f("ix_location_organization_id"))

    op.drop_table("location")
    op.drop_table("audit_patient_link")
    op.drop_table("processed_event")
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_event_published_at"))
        batch_op.drop_index(batch_op.f("ix_outbox_event_created_at"))

    op.drop_table("outbox_event")
    op.drop_table("organization")
    with op.batch_alter_table("dead_letter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letter_source"))
        batch_op.drop_index(batch_op.f("ix_dead_letter_received_at"))

    op.drop_table("dead_letter")
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_record_recorded_at"))
        batch_op.drop_index("ix_audit_record_actor_time")
        batch_op.drop_index(batch_op.f("ix_audit_record_action"))

    op.drop_table("audit_record")
    op.drop_table("audit_chain_head")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS tianfu_append_only()")
