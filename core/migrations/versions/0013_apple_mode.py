"""Apple mode: a server's id at Apple and when its MDM server last talked to Apple; a token's source

`server.apple_id` links a local server to Apple's `mdmServers` id (Apple mode, DESIGN.md §1a);
`server.apple_last_connected_at` is Apple's `lastConnectedDateTime`; `token.source` tells tokens
mdmbot issued (`mdmbot`) from tokens a person downloaded from Apple and dropped in (`apple`).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the Apple columns to servers and the source to tokens."""
    with op.batch_alter_table("server") as batch:
        batch.add_column(sa.Column("apple_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("apple_last_connected_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_unique_constraint("uq_server_apple_id", ["apple_id"])
    with op.batch_alter_table("token") as batch:
        batch.add_column(
            sa.Column(
                "source", sa.String(length=16), nullable=False, server_default="mdmbot"
            )
        )


def downgrade() -> None:
    """Drop the Apple columns and the token's source."""
    with op.batch_alter_table("token") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("server") as batch:
        batch.drop_constraint("uq_server_apple_id", type_="unique")
        batch.drop_column("apple_last_connected_at")
        batch.drop_column("apple_id")
