"""key check value

The secret key's check value: a known text encrypted with the key, so that a deleted or replaced
key file is refused at start-up instead of silently becoming a new key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the keycheck table."""
    op.create_table(
        "keycheck",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    """Drop the keycheck table."""
    op.drop_table("keycheck")
