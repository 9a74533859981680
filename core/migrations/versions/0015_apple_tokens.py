"""Apple's tokens: a token taken in from Apple may have no certificate mdmbot keeps

A server read from Apple School Manager (Apple mode) may have no public key certificate in mdmbot;
the token a person drops for it is then taken in without a recipient check, so
`token.certificate_id` becomes nullable. On SQLite the table is rebuilt, so the two partial
unique indexes (one active, one delivering token per server) are dropped and made again.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: Union[str, Sequence[str], None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PARTIAL = (
    ("uq_token_active_server", sa.text("status = 'active'")),
    ("uq_token_delivering_server", sa.text("status = 'delivering'")),
)


def _nullable(nullable: bool) -> None:
    for name, _ in PARTIAL:
        op.drop_index(name, table_name="token")
    with op.batch_alter_table("token") as batch:
        batch.alter_column("certificate_id", existing_type=sa.Integer(), nullable=nullable)
    for name, where in PARTIAL:
        op.create_index(
            name, "token", ["server_id"], unique=True, sqlite_where=where, postgresql_where=where
        )


def upgrade() -> None:
    """Let a token have no certificate."""
    _nullable(True)


def downgrade() -> None:
    """Every token has a certificate again (fails while a token without one exists)."""
    _nullable(False)
