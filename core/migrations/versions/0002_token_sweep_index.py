"""token sweep index

One composite index serves both sweep queries: active tokens never examined whose expiry is
within the alert horizon, and active tokens whose next alert window has opened.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

"""

from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the sweep index."""
    op.create_index("ix_token_sweep", "token", ["status", "next_alert_at", "expires_at"])


def downgrade() -> None:
    """Drop the sweep index."""
    op.drop_index("ix_token_sweep", table_name="token")
