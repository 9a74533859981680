"""`GET /account` of the device assignment service (DEP-API.md "Endpoints")."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from core.dep import auth as dep_auth
from core.dep import routine
from core.errors import NotFound
from core.models import DepSession, Person, Server, Token

_SERVER_NAMESPACE = uuid.UUID("6d646d62-6f74-4465-9020-736572766572")
# ours: `admin_id` when the issuer's email is unknown (a command-line login or a Slack id is
# never shown); `.invalid` is reserved (RFC 2606), so it cannot be taken for a real address.
ADMIN_PLACEHOLDER = "unknown-admin@mdmbot.invalid"
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000  # ours: the fetch/sync `limit` (DEP-API.md "Cursors")

# Endpoints this service answers, as `/account` advertises them; device endpoints add theirs.
ENDPOINTS: list[tuple[str, tuple[str, ...]]] = [
    ("/session", ("GET",)),
    ("/account", ("GET",)),
    ("/server/devices", ("POST",)),
    ("/devices/sync", ("POST",)),
    ("/devices", ("POST",)),
    ("/devices/disown", ("POST",)),
    ("/profile", ("POST", "GET")),
    ("/profile/devices", ("PUT", "POST", "DELETE")),
]


@dataclass(frozen=True)
class Organisation:
    """The organisation as `/account` describes it (MDMBOT_ORG_* settings)."""

    name: str
    email: str
    phone: str
    address: str
    org_id: str

    @cached_property
    def id_hash(self) -> str:
        """A stable hash of the organisation id (Apple's `org_id_hash` is an opaque hex digest)."""
        return hashlib.sha256(f"mdmbot-org:{self.org_id}".encode()).hexdigest()


def server_uuid(server: Server) -> str:
    """The server's stable `server_uuid` (from its id and creation time, never reused)."""
    return _uuid(server.id, server.created_at)


@lru_cache(maxsize=4096)
def _uuid(server_id: int | None, created_at: datetime) -> str:
    return str(uuid.uuid5(_SERVER_NAMESPACE, f"{server_id}:{created_at.isoformat()}"))


_LIVE_OWNER = (
    sa.select(
        *dep_auth.LIVE_COLUMNS,
        col(Server.id),
        col(Server.name),
        col(Server.created_at),
        col(Person.email),
    )
    .select_from(DepSession)
    .join(Token, col(Token.id) == col(DepSession.token_id))
    .outerjoin(Server, col(Server.id) == col(Token.server_id))
    .outerjoin(Person, col(Person.slack_id) == col(Token.downloaded_by))
    .where(col(DepSession.key_hash) == sa.bindparam("digest"))
)


def session_account(
    connection: sa.Connection, key: str | None, now: datetime, org: Organisation
) -> tuple[dep_auth.LiveSession, str]:
    """The live session for `key` and the account detail of its token's MDM server as JSON, in
    one statement; 401 UNAUTHORIZED for a dead session."""
    digest = dep_auth.session_digest(key)
    row = routine.first(connection, _LIVE_OWNER, {"digest": digest})
    live = dep_auth.live_session(digest, row, now)
    assert row is not None  # live_session refused a missing row
    server_id, name, created_at, email = row[5:]
    if server_id is None:
        raise NotFound("That token's MDM server no longer exists.")
    return live, _detail_json(server_id, name, created_at, email, org)


@lru_cache(maxsize=1024)
def _detail_json(
    server_id: int, name: str, created_at: datetime, email: str | None, org: Organisation
) -> str:
    """The detail as `/account` sends it, encoded once per server and owner."""
    return json.dumps(_detail(server_id, name, created_at, email, org), separators=(",", ":"))


def _detail(
    server_id: int, name: str, created_at: datetime, email: str | None, org: Organisation
) -> dict[str, Any]:
    return {
        "server_name": name,
        "server_uuid": _uuid(server_id, created_at),
        "admin_id": email or ADMIN_PLACEHOLDER,
        "org_name": org.name,
        "org_email": org.email,
        "org_phone": org.phone,
        "org_address": org.address,
        "org_id": org.org_id,
        "org_id_hash": org.id_hash,
        "org_type": "edu",
        "org_version": "v2",
        "urls": [
            {
                "uri": uri,
                "http_method": list(methods),
                "limit": {"default": DEFAULT_LIMIT, "maximum": MAX_LIMIT},
            }
            for uri, methods in ENDPOINTS
        ],
    }
