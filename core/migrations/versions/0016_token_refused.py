"""Apple mode: the last token file refused for a server, alerted to the channel once

A token file from Apple School Manager encrypted to another certificate, or expired, is refused
in one line to the person; `server.token_refused*` keeps what was refused (shown on the App Home
until a token is taken in) and whether the one channel alert for that file went out.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: Union[str, Sequence[str], None] = "0015"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (
    ("token_refused", sa.String()),
    ("token_refused_digest", sa.String(length=64)),
    ("token_refused_by", sa.String()),
    ("token_refused_at", sa.DateTime(timezone=True)),
    ("token_refused_alerted_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    """Add the refused token file's columns to servers."""
    with op.batch_alter_table("server") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("server") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
