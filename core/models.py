"""Database tables (SQLModel), DESIGN.md §5; the schema changes only through Alembic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; SQLite drops the zone, so it is restored on read."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend gave back."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        """On SQLite, one call per value from the stored text (a listing reads hundreds)."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        parse, process = datetime.fromisoformat, self.process_result_value

        def from_text(value: Any) -> datetime | None:
            if isinstance(value, str) and len(value) <= 26:  # stored naive, in UTC
                try:
                    return parse(value + "+00:00")
                except ValueError:
                    pass
            return process(value, dialect)

        return from_text


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _encrypted() -> Any:
    """A column holding text encrypted with the secret key (`mdmbot key rotate` re-encrypts it)."""
    return Field(sa_column_kwargs={"info": {"encrypted": True}})


class TokenStatus(StrEnum):
    """A token's state; only `active` ones are in use by an MDM server."""

    PENDING = "pending"
    DELIVERING = "delivering"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"


def _one_per_server(status: str) -> sa.Index:
    """At most one token in `status` per server, enforced by a partial unique index."""
    where = sa.text(f"status = '{status}'")
    return sa.Index(
        f"uq_token_{status}_server",
        "server_id",
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )


class Server(SQLModel, table=True):
    """A linked MDM server; `normalized_name` is NULL once removed, freeing the name."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    normalized_name: str | None = Field(default=None, max_length=256, unique=True)
    release_devices: bool = True
    created_by: str
    created_at: datetime = _when()
    removed_at: datetime | None = _when(nullable=True)
    consumer_key: str | None = Field(default=None, max_length=128)
    apple_id: str | None = Field(default=None, max_length=64, unique=True)
    apple_last_connected_at: datetime | None = _when(nullable=True)
    token_refused: str | None = None  # Apple mode: why the last token file was refused
    token_refused_digest: str | None = Field(default=None, max_length=64)
    token_refused_by: str | None = None
    token_refused_at: datetime | None = _when(nullable=True)
    token_refused_alerted_at: datetime | None = _when(nullable=True)  # NULL: alert to post


class Certificate(SQLModel, table=True):
    """A public key certificate uploaded for a server."""

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="server.id", index=True)
    pem: str
    fingerprint_sha256: str = Field(max_length=64)
    subject: str
    not_after: datetime = _when()
    uploaded_by: str
    uploaded_at: datetime = _when()
    active: bool = False


class Token(SQLModel, table=True):
    """A server token; its four credentials are kept encrypted in `secrets`."""

    __table_args__ = (
        sa.Index("ix_token_sweep", "status", "next_alert_at", "expires_at"),
        _one_per_server(TokenStatus.ACTIVE),
        _one_per_server(TokenStatus.DELIVERING),
        sa.Index("ix_token_credentials", "consumer_key", "access_digest"),
    )

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="server.id", index=True)
    certificate_id: int | None = Field(default=None, foreign_key="certificate.id")
    consumer_key: str = Field(max_length=128)
    access_digest: str | None = Field(default=None, max_length=64)
    secrets: str = _encrypted()
    issued_at: datetime = _when()
    expires_at: datetime = _when(index=True)
    downloaded_by: str = Field(index=True)
    status: str = Field(default=TokenStatus.PENDING, max_length=16, index=True)
    superseded_at: datetime | None = _when(nullable=True)
    reason: str | None = None
    next_alert_at: datetime | None = _when(nullable=True, index=True)
    installed_at: datetime | None = _when(nullable=True)
    installed_from: str | None = Field(default=None, max_length=64)
    installed_user_agent: str | None = Field(default=None, max_length=256)
    last_used_at: datetime | None = _when(nullable=True)
    last_used_from: str | None = Field(default=None, max_length=64)
    rejected_attempts: int = 0
    last_rejected_at: datetime | None = _when(nullable=True)
    last_rejected_from: str | None = Field(default=None, max_length=64)
    replaces_id: int | None = None
    delivery_target: str | None = Field(default=None, max_length=1024)
    delivery_started_at: datetime | None = _when(nullable=True)
    source: str = Field(default="mdmbot", max_length=16)


class Person(SQLModel, table=True):
    """A Slack user, captured when they first act (Slack scrubs deleted profiles)."""

    slack_id: str = Field(primary_key=True, max_length=32)
    name: str | None = None
    email: str | None = None
    first_seen_at: datetime = _when()
    deactivated_at: datetime | None = _when(nullable=True)


class RoleGrant(SQLModel, table=True):
    """The one mdmbot role a person holds."""

    id: int | None = Field(default=None, primary_key=True)
    person_id: str = Field(foreign_key="person.slack_id", unique=True, max_length=32)
    role: str = Field(max_length=40)
    granted_by: str
    granted_at: datetime = _when()


class RotationCase(SQLModel, table=True):
    """Tokens to rotate because their downloader left or changed their password."""

    __table_args__ = (
        sa.Index(
            "uq_rotationcase_open",
            "person_id",
            "reason",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    person_id: str = Field(foreign_key="person.slack_id", index=True, max_length=32)
    reason: str = Field(max_length=32)
    status: str = Field(default="open", max_length=16, index=True)
    opened_by: str
    opened_at: datetime = _when()
    closed_at: datetime | None = _when(nullable=True)
    channel: str | None = None
    ts: str | None = None
    last_posted_at: datetime | None = _when(nullable=True)
    stale_at: datetime | None = _when(nullable=True)
    edited_at: datetime | None = _when(nullable=True)
    reminder_ts: str | None = None  # the latest daily reminder, in the checklist's thread


class RotationItem(SQLModel, table=True):
    """One token of a rotation case; done when the token is replaced."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="rotationcase.id", index=True)
    token_id: int = Field(foreign_key="token.id", index=True)
    done_by: str | None = None
    done_at: datetime | None = _when(nullable=True)


class AlertDelivery(SQLModel, table=True):
    """A claimed expiry alert: (token, kind, threshold) is posted at most once."""

    __table_args__ = (sa.UniqueConstraint("token_id", "kind", "threshold"),)

    id: int | None = Field(default=None, primary_key=True)
    token_id: int = Field(foreign_key="token.id", index=True)
    kind: str = Field(default="expiry", max_length=16)
    threshold: int
    status: str = Field(default="pending", max_length=16, index=True)
    claimed_at: datetime = _when()
    sent_at: datetime | None = _when(nullable=True)
    attempts: int = 0
    error: str | None = None
    channel: str | None = None
    ts: str | None = None
    stale_at: datetime | None = _when(nullable=True, index=True)
    stale_by: str | None = None
    edited_at: datetime | None = _when(nullable=True)
    superseded_at: datetime | None = _when(nullable=True)  # a newer message about its server


class ProcessedEvent(SQLModel, table=True):
    """A Slack Events API delivery already handled (Slack retries deliveries)."""

    event_id: str = Field(primary_key=True, max_length=64)
    received_at: datetime = _when()


class AuditEvent(SQLModel, table=True):
    """One change, who made it and when."""

    id: int | None = Field(default=None, primary_key=True)
    actor: str
    action: str = Field(max_length=64, index=True)
    subject: str
    detail: str = ""
    at: datetime = _when(index=True)


class Lease(SQLModel, table=True):
    """A named lease; the holder of `scheduler` runs the sweeps."""

    name: str = Field(primary_key=True, max_length=64)
    holder: str
    expires_at: datetime = _when()


class DepNonce(SQLModel, table=True):
    """An OAuth nonce already used with its timestamp (RFC 5849 §3.3), kept for the window."""

    __table_args__ = (sa.UniqueConstraint("consumer_key", "timestamp", "nonce"),)

    id: int | None = Field(default=None, primary_key=True)
    consumer_key: str = Field(max_length=128)
    timestamp: int = Field(sa_type=sa.BigInteger)
    nonce: str = Field(max_length=128)
    seen_at: datetime = _when(index=True)


class DepSession(SQLModel, table=True):
    """A device assignment service session (X-ADM-Auth-Session), stored as a SHA-256 hash."""

    key_hash: str = Field(primary_key=True, max_length=64)
    token_id: int = Field(foreign_key="token.id", index=True)
    created_at: datetime = _when()
    expires_at: datetime = _when(index=True)
class KeyCheck(SQLModel, table=True):
    """A known text encrypted with the secret key, so a lost or replaced key is noticed."""

    id: int = Field(default=1, primary_key=True)
    value: str = _encrypted()
    created_at: datetime = _when()


class Device(SQLModel, table=True):
    """A device of the organisation; `server_id` is the MDM server it is assigned to."""

    __table_args__ = (sa.Index("ix_device_server_serial", "server_id", "serial_number"),)

    id: int | None = Field(default=None, primary_key=True)
    serial_number: str = Field(max_length=20, unique=True)
    model: str = ""
    description: str = ""
    color: str = ""
    asset_tag: str | None = None
    device_family: str = Field(max_length=16)
    os: str = Field(max_length=16)
    order_number: str | None = None
    server_id: int | None = Field(default=None, foreign_key="server.id")
    assigned_at: datetime | None = _when(nullable=True)
    assigned_by: str | None = None
    profile_status: str = Field(default="empty", max_length=16)
    profile_uuid: str | None = Field(default=None, max_length=64)
    profile_assign_time: datetime | None = _when(nullable=True)
    profile_push_time: datetime | None = _when(nullable=True)
    released_at: datetime | None = _when(nullable=True)
    released_by: str | None = None
    imported_at: datetime = _when()


class DeviceChange(SQLModel, table=True):
    """One change an MDM server can see, in its append-only, ordered log (sync cursors walk it)."""

    __table_args__ = (sa.Index("ix_devicechange_server_id", "server_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="server.id")
    device_id: int = Field(foreign_key="device.id")
    op_type: str = Field(max_length=16)
    op_date: datetime = _when()


class Profile(SQLModel, table=True):
    """An enrollment profile an MDM server defined (`POST /profile`); `body` is its JSON."""

    id: int | None = Field(default=None, primary_key=True)
    profile_uuid: str = Field(max_length=64, unique=True)
    server_id: int = Field(foreign_key="server.id", index=True)
    body: str
    created_at: datetime = _when()


class DefaultAssignment(SQLModel, table=True):
    """Apple's "Default Device Assignment": the server new devices of a family go to."""

    device_family: str = Field(primary_key=True, max_length=16)
    server_id: int = Field(foreign_key="server.id")
    set_by: str
    set_at: datetime = _when()


class MdmConnection(SQLModel, table=True):
    """How a server's tokens reach its MDM server; `secret` is encrypted by the vault."""

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="server.id", unique=True)
    kind: str = Field(max_length=16)
    url: str | None = Field(default=None, max_length=2048)
    dep_name: str | None = Field(default=None, max_length=256)
    base_url: str | None = Field(default=None, max_length=2048)
    command: str | None = None
    secret: str | None = Field(default=None, sa_column_kwargs={"info": {"encrypted": True}})
    remote_id: str | None = Field(default=None, max_length=64)
    auto_renew_days: int | None = None
    created_by: str
    created_at: datetime = _when()
    last_install_at: datetime | None = _when(nullable=True)
    last_install_error: str | None = None


class TokenInstall(SQLModel, table=True):
    """Installing one token into its MDM server: state, attempts and the retry claim."""

    id: int | None = Field(default=None, primary_key=True)
    token_id: int = Field(foreign_key="token.id", unique=True)
    server_id: int = Field(foreign_key="server.id", index=True)
    status: str = Field(default="pending", max_length=16, index=True)
    requested_by: str
    created_at: datetime = _when()
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: datetime | None = _when(nullable=True)
    next_attempt_at: datetime | None = _when(nullable=True, index=True)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = _when(nullable=True)
    installed_at: datetime | None = _when(nullable=True)


class AppleSync(SQLModel, table=True):
    """Apple mode's sync state (one row): the last success and the failure going on, if any."""

    id: int = Field(default=1, primary_key=True)
    last_success_at: datetime | None = _when(nullable=True)
    failing_kind: str | None = Field(default=None, max_length=16)
    failing_message: str | None = None
    failing_since: datetime | None = _when(nullable=True)
    alerted_kinds: str = ""
