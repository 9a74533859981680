"""one open case per person and reason

Two replicas handling two deliveries of one departure at the same moment must not open two
checklists; the database keeps one open case per person and reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    """Add the partial unique index."""
    op.create_index(
        "uq_rotationcase_open",
        "rotationcase",
        ["person_id", "reason"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    """Drop the partial unique index."""
    op.drop_index("uq_rotationcase_open", table_name="rotationcase")
