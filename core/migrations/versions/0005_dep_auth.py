"""device assignment service: token feedback columns, OAuth nonces, sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the token feedback columns and the nonce and session tables."""
    with op.batch_alter_table("token") as batch:
        batch.add_column(sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("installed_from", sa.String(64), nullable=True))
        batch.add_column(sa.Column("installed_user_agent", sa.String(256), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_from", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("rejected_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_rejected_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_rejected_from", sa.String(64), nullable=True))
    op.create_table(
        "depnonce",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("consumer_key", sa.String(128), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("consumer_key", "timestamp", "nonce"),
    )
    op.create_index("ix_depnonce_seen_at", "depnonce", ["seen_at"])
    op.create_table(
        "depsession",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("token.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_depsession_token_id", "depsession", ["token_id"])
    op.create_index("ix_depsession_expires_at", "depsession", ["expires_at"])


def downgrade() -> None:
    """Drop the nonce and session tables and the token feedback columns."""
    op.drop_table("depsession")
    op.drop_table("depnonce")
    with op.batch_alter_table("token") as batch:
        for column in (
            "last_rejected_from",
            "last_rejected_at",
            "rejected_attempts",
            "last_used_from",
            "last_used_at",
            "installed_user_agent",
            "installed_from",
            "installed_at",
        ):
            batch.drop_column(column)
