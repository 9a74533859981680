"""devices, their per-server change log, profiles and default assignments

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the device tables and their indexes (fetch pages and sync walk by keyset)."""
    op.create_table(
        "device",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial_number", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("color", sa.String(), nullable=False),
        sa.Column("asset_tag", sa.String(), nullable=True),
        sa.Column("device_family", sa.String(length=16), nullable=False),
        sa.Column("os", sa.String(length=16), nullable=False),
        sa.Column("order_number", sa.String(), nullable=True),
        sa.Column("server_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", WHEN, nullable=True),
        sa.Column("assigned_by", sa.String(), nullable=True),
        sa.Column("profile_status", sa.String(length=16), nullable=False),
        sa.Column("profile_uuid", sa.String(length=64), nullable=True),
        sa.Column("profile_assign_time", WHEN, nullable=True),
        sa.Column("profile_push_time", WHEN, nullable=True),
        sa.Column("released_at", WHEN, nullable=True),
        sa.Column("released_by", sa.String(), nullable=True),
        sa.Column("imported_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("serial_number"),
    )
    op.create_index("ix_device_server_serial", "device", ["server_id", "serial_number"])
    op.create_table(
        "devicechange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("op_type", sa.String(length=16), nullable=False),
        sa.Column("op_date", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_devicechange_server_id", "devicechange", ["server_id", "id"])
    op.create_table(
        "profile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_uuid", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("profile_uuid"),
    )
    op.create_index("ix_profile_server_id", "profile", ["server_id"])
    op.create_table(
        "defaultassignment",
        sa.Column("device_family", sa.String(length=16), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(), nullable=False),
        sa.Column("set_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["server_id"], ["server.id"]),
        sa.PrimaryKeyConstraint("device_family"),
    )


def downgrade() -> None:
    """Drop the device tables."""
    op.drop_table("defaultassignment")
    op.drop_index("ix_profile_server_id", table_name="profile")
    op.drop_table("profile")
    op.drop_index("ix_devicechange_server_id", table_name="devicechange")
    op.drop_table("devicechange")
    op.drop_index("ix_device_server_serial", table_name="device")
    op.drop_table("device")
