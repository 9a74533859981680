"""stable consumer key per server; MDM connections and token installs

A server keeps one consumer key across renewals (NanoDEP refuses a changed key), so the key moves
to the server (each server keeps the key of its active, else newest, token) and is no longer
unique per token; tokens are found by consumer key and a SHA-256 digest of their access token.
Connections say how a server's tokens are installed into its MDM server; installs record each
token's install state and the claim of the sweep that retries it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PARTIAL = (
    ("uq_token_active_server", sa.text("status = 'active'")),
    ("uq_token_delivering_server", sa.text("status = 'delivering'")),
)
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _unique_name() -> str:
    return "token_consumer_key_key" if op.get_bind().dialect.name == "postgresql" else (
        "uq_token_consumer_key"
    )


def upgrade() -> None:
    """Move the consumer key to the server, relax its uniqueness, add connections and installs."""
    with op.batch_alter_table("server") as batch:
        batch.add_column(sa.Column("consumer_key", sa.String(length=128), nullable=True))
    op.execute(
        "UPDATE server SET consumer_key = (SELECT t.consumer_key FROM token AS t "
        "WHERE t.server_id = server.id AND t.status <> 'pending' "
        "ORDER BY CASE WHEN t.status = 'active' THEN 0 ELSE 1 END, t.issued_at DESC, t.id DESC "
        "LIMIT 1)"
    )
    for name, _ in PARTIAL:
        op.drop_index(name, table_name="token")
    with op.batch_alter_table("token", naming_convention=NAMING) as batch:
        batch.drop_constraint(_unique_name(), type_="unique")
        batch.add_column(sa.Column("access_digest", sa.String(length=64), nullable=True))
        batch.create_index("ix_token_credentials", ["consumer_key", "access_digest"])
    for name, where in PARTIAL:
        op.create_index(
            name, "token", ["server_id"], unique=True, sqlite_where=where, postgresql_where=where
        )
    op.create_table(
        "mdmconnection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("dep_name", sa.String(length=256), nullable=True),
        sa.Column("base_url", sa.String(length=2048), nullable=True),
        sa.Column("command", sa.String(), nullable=True),
        sa.Column("secret", sa.String(), nullable=True),
        sa.Column("remote_id", sa.String(length=64), nullable=True),
        sa.Column("auto_renew_days", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_install_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_install_error", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("server_id"),
    )
    op.create_table(
        "tokeninstall",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["token.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_id"),
    )
    op.create_index("ix_tokeninstall_server_id", "tokeninstall", ["server_id"])
    op.create_index("ix_tokeninstall_status", "tokeninstall", ["status"])
    op.create_index("ix_tokeninstall_next_attempt_at", "tokeninstall", ["next_attempt_at"])


def downgrade() -> None:
    """Drop installs and connections; tokens get unique consumer keys back (renewals collide)."""
    op.drop_table("tokeninstall")
    op.drop_table("mdmconnection")
    for name, _ in PARTIAL:
        op.drop_index(name, table_name="token")
    with op.batch_alter_table("token", naming_convention=NAMING) as batch:
        batch.drop_index("ix_token_credentials")
        batch.drop_column("access_digest")
        batch.create_unique_constraint(_unique_name(), ["consumer_key"])
    for name, where in PARTIAL:
        op.create_index(
            name, "token", ["server_id"], unique=True, sqlite_where=where, postgresql_where=where
        )
    with op.batch_alter_table("server") as batch:
        batch.drop_column("consumer_key")
