"""one active token per server; tokens being delivered; processed interactive payloads

Concurrent rotations could leave several active tokens for one server. The database now keeps
at most one active and one in-delivery token per server; a token records the active token it
expects to replace (compare-and-swap) and where it is being delivered, so a crash between the
DM and activation can be reconciled. Servers that already have several active tokens keep the
newest; the others are marked superseded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ACTIVE = sa.text("status = 'active'")
DELIVERING = sa.text("status = 'delivering'")


def upgrade() -> None:
    """Keep the newest active token per server, then add the columns and partial indexes."""
    op.execute(
        "UPDATE token SET status = 'superseded', superseded_at = CURRENT_TIMESTAMP, "
        "next_alert_at = NULL, reason = 'duplicate active token' "
        "WHERE status = 'active' AND EXISTS (SELECT 1 FROM token AS newer "
        "WHERE newer.server_id = token.server_id AND newer.status = 'active' "
        "AND (newer.issued_at > token.issued_at "
        "OR (newer.issued_at = token.issued_at AND newer.id > token.id)))"
    )
    with op.batch_alter_table("token") as batch:
        batch.add_column(sa.Column("replaces_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("delivery_target", sa.String(length=1024), nullable=True))
        batch.add_column(
            sa.Column("delivery_started_at", sa.DateTime(timezone=True), nullable=True)
        )
    for name, where in (
        ("uq_token_active_server", ACTIVE),
        ("uq_token_delivering_server", DELIVERING),
    ):
        op.create_index(
            name, "token", ["server_id"], unique=True, sqlite_where=where, postgresql_where=where
        )


def downgrade() -> None:
    """Drop the partial indexes and the columns."""
    op.drop_index("uq_token_delivering_server", table_name="token")
    op.drop_index("uq_token_active_server", table_name="token")
    with op.batch_alter_table("token") as batch:
        batch.drop_column("delivery_started_at")
        batch.drop_column("delivery_target")
        batch.drop_column("replaces_id")
