"""the served School Manager API: API accounts, access tokens, device activities

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: Union[str, Sequence[str], None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the API accounts, their access tokens and their device activities."""
    op.create_table(
        "apiaccount",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id"),
    )
    op.create_table(
        "apiaccesstoken",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["apiaccount.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_apiaccesstoken_account_id", "apiaccesstoken", ["account_id"])
    op.create_index("ix_apiaccesstoken_expires_at", "apiaccesstoken", ["expires_at"])
    op.create_table(
        "apiactivity",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("activity_type", sa.String(length=48), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sub_status", sa.String(length=40), nullable=False),
        sa.Column("log_csv", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["apiaccount.id"]),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_apiactivity_account_id", "apiactivity", ["account_id"])
    op.create_index("ix_apiactivity_created_at", "apiactivity", ["created_at"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("apiactivity")
    op.drop_table("apiaccesstoken")
    op.drop_table("apiaccount")
