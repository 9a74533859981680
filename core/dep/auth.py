"""Authentication of MDM servers to the device assignment service (DEP-API.md "Authentication").

`GET /session` carries an OAuth 1.0a HMAC-SHA1 Authorization header (RFC 5849, `core.dep.oauth`)
signed with the four credentials inside a server token. Nonces are kept in the database per
(consumer key, timestamp) so every replica refuses a replay, and sessions are stored as SHA-256
hashes bound to their token, so they work on any replica and end with the token.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from core.dep import feedback as dep_feedback
from core.dep import routine
from core.dep.errors import DepError as DepError
from core.dep.feedback import ReplacedTokenAlert
from core.dep.oauth import OAuthRequest as OAuthRequest
from core.dep.oauth import parse_oauth as parse_oauth
from core.dep.oauth import signature_valid as signature_valid
from core.models import DepNonce, DepSession, Token, TokenStatus
from core.tokens.issuance import access_digest
from core.vault import Vault

WINDOW = timedelta(minutes=5)  # ours: accepted clock skew of oauth_timestamp
SESSION_IDLE = timedelta(minutes=3)  # ours: MicroMDM renews every 3 minutes on its own clock
TOUCH_EVERY = timedelta(seconds=30)  # sessions and `last seen` are rewritten at most this often
PRUNE_BATCH = 50  # ours: stale nonces and dead sessions pruned per `/session`, at most
PRUNE_EVERY = 8  # ours: one `/session` in 8 prunes 8 batches at once (one statement each)
REPLAYED = ("NONCE_USED", "replayed_nonce")


@dataclass(frozen=True)
class SessionOutcome:
    """A new session key, or the refusal; and what the alert channel must hear about."""

    session_key: str | None = field(default=None, repr=False)
    error: DepError | None = None
    alert: ReplacedTokenAlert | None = None
    ticked_cases: tuple[int, ...] = ()
    installed: bool = False  # this session is the token's first use


@dataclass(frozen=True)
class Verified:
    """The token whose credentials signed a request; `routine` when it is active and installed,
    so opening a session only records the session, its nonce and `last seen`."""

    token_id: int
    routine: bool


def verify_request(
    connection: sa.Connection,
    vault: Vault,
    request: OAuthRequest,
    now: datetime,
    signers: Signers | None = None,
) -> Verified:
    """The token whose credentials signed the request (only reads); else a 401."""
    _check_timestamp(request, now)
    refused = DepError(401, "SIGNATURE_INVALID", "unknown_key")
    rows = connection.execute(
        _BY_KEY, {"key": request.consumer_key, "digest": access_digest(request.access_token)}
    ).all()
    for token_id, status, sealed, installed_at in rows:
        if status == TokenStatus.PENDING:
            continue
        creds = _opened(vault, sealed)
        if not hmac.compare_digest(creds["access_token"], request.access_token):
            continue
        if signers is not None:
            signers.remember(request, cast(int, token_id), creds)
        _check_signature(request, creds)
        routine = status == TokenStatus.ACTIVE and installed_at is not None
        return Verified(cast(int, token_id), routine)
    raise refused


def verify_known(signers: Signers, request: OAuthRequest, now: datetime) -> Verified | None:
    """`verify_request` without the database for a token this process verified before; None
    for any other. Whether the token may still open a session is read when the session is."""
    _check_timestamp(request, now)
    known = signers.get(request)
    if known is None:
        return None
    token_id, creds = known
    _check_signature(request, creds)
    return Verified(token_id, routine=True)


def _check_timestamp(request: OAuthRequest, now: datetime) -> None:
    if abs(now.timestamp() - request.timestamp) > WINDOW.total_seconds():
        raise DepError(401, "TIMESTAMP_REFUSED", "stale_timestamp")


def _check_signature(request: OAuthRequest, creds: dict[str, str]) -> None:
    if not signature_valid(request, creds["consumer_secret"], creds["access_secret"]):
        raise DepError(401, "SIGNATURE_INVALID", "bad_signature")


_OPENED: dict[str, dict[str, str]] = {}  # sealed credentials → opened, for this process
_OPENED_MAX = 1024  # more than the 250 servers Apple allows an organisation, with renewals


def _opened(vault: Vault, sealed: str) -> dict[str, str]:
    """A token's credentials, decrypted once per process (the sealed text changes with them)."""
    creds = _OPENED.get(sealed)
    if creds is None:
        creds = json.loads(vault.decrypt(sealed))
        if len(_OPENED) >= _OPENED_MAX:
            _OPENED.clear()
        _OPENED[sealed] = creds
    return creds


class Signers:
    """Tokens that signed a request here before, by consumer key and access token.

    A token's credentials never change (a key rotation re-seals the same ones) and a token
    never goes back to `pending`, so a signer once found stays that token's.
    """

    def __init__(self, limit: int = _OPENED_MAX) -> None:
        self.limit = limit
        self._known: dict[tuple[str, str], tuple[int, dict[str, str]]] = {}

    def get(self, request: OAuthRequest) -> tuple[int, dict[str, str]] | None:
        """The token id and credentials of the request's signer, if seen before."""
        return self._known.get((request.consumer_key, request.access_token))

    def remember(self, request: OAuthRequest, token_id: int, creds: dict[str, str]) -> None:
        """Note the token whose access token the request presents."""
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[(request.consumer_key, request.access_token)] = (token_id, creds)


def open_session(
    session: Session,
    token_id: int,
    request: OAuthRequest,
    now: datetime,
    *,
    client: str,
    user_agent: str,
) -> SessionOutcome:
    """Open a session for a verified request: once per nonce, for a live token only."""
    connection = session.connection()
    outcome = open_routine_session(connection, token_id, request, now, client=client)
    if outcome is not None:
        return outcome
    _prune_now_and_then(connection, now)
    if not _first_use_of_nonce(connection, request, now):
        return SessionOutcome(error=DepError(401, *REPLAYED))
    token = session.get(Token, token_id)
    if token is None:
        return SessionOutcome(error=DepError(401, "SIGNATURE_INVALID", "unknown_key"))
    if token.status != TokenStatus.ACTIVE:
        alert = None
        if token.status == TokenStatus.SUPERSEDED:
            alert = dep_feedback.record_rejected(session, token, now, client)
        return SessionOutcome(error=DepError(401, "token_rejected", "token_rejected"), alert=alert)
    if token.expires_at <= now:
        return SessionOutcome(error=DepError(401, "token_expired", "token_expired"))
    key = secrets.token_urlsafe(32)
    session.add(
        DepSession(
            key_hash=_hash(key),
            token_id=token_id,
            created_at=now,
            expires_at=now + SESSION_IDLE + TOUCH_EVERY,
        )
    )
    first = token.installed_at is None
    ticked = dep_feedback.record_use(session, token, now, client, user_agent)
    return SessionOutcome(session_key=key, ticked_cases=ticked, installed=first)


def open_routine_session(
    connection: sa.Connection, token_id: int, request: OAuthRequest, now: datetime, *, client: str
) -> SessionOutcome | None:
    """`open_session` for an active, installed token, in Core statements only (in one on a
    PostgreSQL connection in autocommit); None, having written nothing, for any other token
    (its first use, or a refusal, needs `open_session`)."""
    alone = connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    if alone and connection.dialect.name == "postgresql":
        return _open_routine_alone(connection, token_id, request, now, client)
    row = routine.first(connection, _STATE, {"id": token_id})
    if row is None or row[0] != TokenStatus.ACTIVE or row[1] <= now or row[2] is None:
        return None
    _prune_now_and_then(connection, now)
    if not _first_use_of_nonce(connection, request, now):
        return SessionOutcome(error=DepError(401, *REPLAYED))
    key = secrets.token_urlsafe(32)
    expires, digest = now + SESSION_IDLE + TOUCH_EVERY, _hash(key)
    session = {"key_hash": digest, "token_id": token_id, "created_at": now, "expires_at": expires}
    routine.rows(connection, _NEW_SESSION, session)
    if row[3] is None or row[3] < now - dep_feedback.LAST_SEEN_EVERY:
        routine.rows(connection, _LAST_SEEN, {"token": token_id, "at": now, "client": client[:64]})
    return SessionOutcome(session_key=key)


def _open_routine_alone(
    connection: sa.Connection, token_id: int, request: OAuthRequest, now: datetime, client: str
) -> SessionOutcome | None:
    """`open_routine_session` on a PostgreSQL connection in autocommit: one round trip."""
    _prune_now_and_then(connection, now)
    key = secrets.token_urlsafe(32)
    opened = routine.open_in_one_statement(
        connection,
        token_id,
        (request.consumer_key, request.timestamp, request.nonce),
        (_hash(key), now + SESSION_IDLE + TOUCH_EVERY),
        now,
        now - dep_feedback.LAST_SEEN_EVERY,
        client,
    )
    if opened is None:
        return None
    if not opened:
        return SessionOutcome(error=DepError(401, *REPLAYED))
    return SessionOutcome(session_key=key)


def _prune_now_and_then(connection: sa.Connection, now: datetime) -> None:
    """One `/session` in `PRUNE_EVERY` prunes that many batches."""
    if next(_SESSIONS_OPENED) % PRUNE_EVERY == 0:
        prune(connection, now, PRUNE_BATCH * PRUNE_EVERY)


# Tokens of one server share its consumer key: the access token's digest picks the one presented
# (tokens issued before migration 0009 have no digest and are compared after decryption).
_BY_KEY = sa.select(
    col(Token.id), col(Token.status), col(Token.secrets), col(Token.installed_at)
).where(
    col(Token.consumer_key) == sa.bindparam("key"),
    sa.or_(
        col(Token.access_digest) == sa.bindparam("digest"), col(Token.access_digest).is_(None)
    ),
)
_STATE = sa.select(
    col(Token.status), col(Token.expires_at), col(Token.installed_at), col(Token.last_used_at)
).where(col(Token.id) == sa.bindparam("id"))
_NEW_SESSION = sa.insert(DepSession)
_LAST_SEEN = (
    sa.update(Token)
    .where(col(Token.id) == sa.bindparam("token"))
    .values(last_used_at=sa.bindparam("at"), last_used_from=sa.bindparam("client"))
)


@dataclass(frozen=True)
class LiveSession:
    """A session that answered; `stale` when its expiry or the token's last use need a write."""

    key_hash: str = field(repr=False)
    token_id: int
    stale: bool


def check_session(connection: sa.Connection, key: str | None, now: datetime) -> LiveSession:
    """The live session for `key` (read only); else 401 UNAUTHORIZED."""
    digest = session_digest(key)
    row = connection.execute(_LIVE, {"digest": digest}).first()
    return live_session(digest, row, now)


def session_digest(key: str | None) -> str:
    """The stored hash of a session key; 401 UNAUTHORIZED for none or an oversized one."""
    if not key or len(key) > 256:
        raise DepError(401, "UNAUTHORIZED", "session_unknown")
    return _hash(key)


def live_session(digest: str, row: Sequence[Any] | None, now: datetime) -> LiveSession:
    """The session read by a statement that starts with `LIVE_COLUMNS`; else 401 UNAUTHORIZED.

    Writes are batched: a session's expiry is pushed to `SESSION_IDLE + TOUCH_EVERY` ahead, and
    only rewritten once less than `SESSION_IDLE` is left, so it lives at least 3 idle minutes
    while most requests only read.
    """
    if row is None:
        raise DepError(401, "UNAUTHORIZED", "session_unknown")
    expires_at, token_id, status, token_expires, last_used = row[:5]
    if expires_at <= now or status != TokenStatus.ACTIVE or token_expires <= now or not token_id:
        raise DepError(401, "UNAUTHORIZED", "session_unknown")
    stale = expires_at < now + SESSION_IDLE or last_used is None or last_used < now - TOUCH_EVERY
    return LiveSession(digest, token_id, stale)


LIVE_COLUMNS = (
    col(DepSession.expires_at),
    col(Token.id),
    col(Token.status),
    col(Token.expires_at),
    col(Token.last_used_at),
)
_LIVE = (
    sa.select(*LIVE_COLUMNS)
    .join(Token, col(Token.id) == col(DepSession.token_id))
    .where(col(DepSession.key_hash) == sa.bindparam("digest"))
)


def touch_session(
    connection: sa.Connection, live: LiveSession, now: datetime, client: str
) -> None:
    """Push the session's expiry out and record the token's use (`last seen`)."""
    connection.execute(
        _EXTEND, {"digest": live.key_hash, "expires": now + SESSION_IDLE + TOUCH_EVERY}
    )
    connection.execute(_LAST_SEEN, {"token": live.token_id, "at": now, "client": client[:64]})


_EXTEND = (
    sa.update(DepSession)
    .where(col(DepSession.key_hash) == sa.bindparam("digest"))
    .values(expires_at=sa.bindparam("expires"))
)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _first_use_of_nonce(connection: sa.Connection, request: OAuthRequest, now: datetime) -> bool:
    """Record the nonce; False when (key, timestamp, nonce) was already used (on any replica)."""
    added = routine.first(
        connection,
        _NONCE[connection.dialect.name == "sqlite"],
        {"key": request.consumer_key, "ts": request.timestamp, "nonce": request.nonce, "at": now},
    )
    return added is not None


_NONCE = {
    sqlite: insert(DepNonce)
    .values(
        consumer_key=sa.bindparam("key"),
        timestamp=sa.bindparam("ts"),
        nonce=sa.bindparam("nonce"),
        seen_at=sa.bindparam("at"),
    )
    .on_conflict_do_nothing(index_elements=["consumer_key", "timestamp", "nonce"])
    .returning(col(DepNonce.id))
    for sqlite, insert in ((True, sqlite_insert), (False, postgresql_insert))
}


_SESSIONS_OPENED = itertools.count()  # this process's /session calls; every 8th prunes


def prune(connection: sa.Connection, now: datetime, limit: int | None = None) -> None:
    """Forget nonces once their timestamps fall out of the window, and dead sessions; at most
    `limit` of each when given (every `/session` prunes a batch, the sweep the rest)."""
    values = {"seen": now - 2 * WINDOW, "dead": now - SESSION_IDLE}
    if limit is None:
        connection.execute(_PRUNE_ALL_NONCES, values)
        connection.execute(_PRUNE_ALL_SESSIONS, values)
        return
    connection.execute(_PRUNE_NONCES, {**values, "limit": limit})
    connection.execute(_PRUNE_SESSIONS, {**values, "limit": limit})


# Built once: each /session runs both batches (an index range seek each, usually empty).
_OLD_NONCES = sa.select(col(DepNonce.id)).where(col(DepNonce.seen_at) < sa.bindparam("seen"))
_DEAD = sa.select(col(DepSession.key_hash)).where(col(DepSession.expires_at) < sa.bindparam("dead"))
_PRUNE_ALL_NONCES = sa.delete(DepNonce).where(col(DepNonce.seen_at) < sa.bindparam("seen"))
_PRUNE_ALL_SESSIONS = sa.delete(DepSession).where(col(DepSession.expires_at) < sa.bindparam("dead"))
_PRUNE_NONCES = sa.delete(DepNonce).where(
    col(DepNonce.id).in_(_OLD_NONCES.limit(sa.bindparam("limit")).scalar_subquery())
)
_PRUNE_SESSIONS = sa.delete(DepSession).where(
    col(DepSession.key_hash).in_(_DEAD.limit(sa.bindparam("limit")).scalar_subquery())
)
