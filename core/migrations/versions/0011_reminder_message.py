"""one live message per event: a checklist's latest reminder, superseded channel messages

Where a checklist's latest daily reminder is, so it can be edited and closed with the checklist;
when a channel message about a server was superseded by a newer one (it is not edited again).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the reminder's message ts to rotation cases and `superseded_at` to deliveries."""
    with op.batch_alter_table("rotationcase") as batch:
        batch.add_column(sa.Column("reminder_ts", sa.String(), nullable=True))
    with op.batch_alter_table("alertdelivery") as batch:
        batch.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop both columns."""
    with op.batch_alter_table("alertdelivery") as batch:
        batch.drop_column("superseded_at")
    with op.batch_alter_table("rotationcase") as batch:
        batch.drop_column("reminder_ts")
