"""messages that stay true

Alerts and checklists offering to renew a token that was since replaced are marked `stale_at` (by
the replacement, from any path) and edited once, at once from Slack or at the next sweep;
`edited_at` records when. Alerts already sent for tokens no longer active are marked now, so the
first sweep after the upgrade corrects them too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the stale/edited columns and mark alerts of tokens already replaced."""
    with op.batch_alter_table("alertdelivery") as batch:
        batch.add_column(sa.Column("stale_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stale_by", sa.String(), nullable=True))
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_alertdelivery_stale_at", ["stale_at"])
    with op.batch_alter_table("rotationcase") as batch:
        batch.add_column(sa.Column("stale_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE alertdelivery SET stale_at = (SELECT token.superseded_at FROM token "
        "WHERE token.id = alertdelivery.token_id) WHERE status = 'sent' AND ts IS NOT NULL "
        "AND token_id IN (SELECT id FROM token WHERE status IN ('superseded', 'revoked') "
        "AND superseded_at IS NOT NULL)"
    )


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("rotationcase") as batch:
        batch.drop_column("edited_at")
        batch.drop_column("stale_at")
    with op.batch_alter_table("alertdelivery") as batch:
        batch.drop_index("ix_alertdelivery_stale_at")
        batch.drop_column("edited_at")
        batch.drop_column("stale_by")
        batch.drop_column("stale_at")
