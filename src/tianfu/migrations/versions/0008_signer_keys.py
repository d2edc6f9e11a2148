"""consult signer keys: PIN-sealed private keys, wrong-PIN lockout, superseded keys

Existing keys (sealed with the SecretBox only) keep verifying what they signed, but their private part
is destroyed here, so that the server can no longer sign with them; the consultant enrols a new,
PIN-protected key the next time they sign.

Revision ID: 0008_signer_keys
Revises: 0007_consult_records
Create Date: 2026-11-30 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tianfu.core.db

revision: str = "0008_signer_keys"
down_revision: str | Sequence[str] | None = "0007_consult_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consult_signer_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_sealed_key", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("failed_pin_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("locked_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("superseded_at", tianfu.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE consult_signer_key SET private_key_sealed = NULL, superseded_at = CURRENT_TIMESTAMP "
        "WHERE pin_sealed_key IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("consult_signer_key", schema=None) as batch_op:
        batch_op.drop_column("superseded_at")
        batch_op.drop_column("locked_at")
        batch_op.drop_column("failed_pin_attempts")
        batch_op.drop_column("pin_sealed_key")
