"""iPads imported with os iOS run iPadOS

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-04

"""

from typing import Sequence, Union

from alembic import op

revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Name the OS of iPads imported as `iOS` `iPadOS`, as the import now does."""
    op.execute("UPDATE device SET os = 'iPadOS' WHERE device_family = 'iPad' AND os = 'iOS'")


def downgrade() -> None:
    """Nothing to undo: `iPadOS` is right for every iPad."""
