"""The tables of the served School Manager API (their migration is 0012)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from core.models import UTCDateTime


class ApiAccount(SQLModel, table=True):
    """An API account: its client id, key id and public key (the private key is never kept)."""

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64, unique=True)
    key_id: str = Field(max_length=64)
    label: str = Field(max_length=128)
    scope: str = Field(max_length=16)
    public_key: str
    created_by: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    revoked_by: str | None = None


class ApiAccessToken(SQLModel, table=True):
    """An access token, kept as the SHA-256 of its value; it dies with its account."""

    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: int = Field(foreign_key="apiaccount.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class ApiActivity(SQLModel, table=True):
    """An `orgDeviceActivities` resource: what was asked, when it completed, its CSV log."""

    id: str = Field(primary_key=True, max_length=36)
    account_id: int = Field(foreign_key="apiaccount.id", index=True)
    activity_type: str = Field(max_length=48)
    server_id: int | None = Field(default=None, foreign_key="server.id")
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    sub_status: str = Field(max_length=40)
    log_csv: str = ""
