"""Use cases over MDM servers: add, edit, remove, look up, list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core import audit
from core.db import connection_of
from core.errors import DuplicateName, InvalidInput, NotFound
from core.models import Certificate, RotationCase, RotationItem, Server, Token
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.certificates import LoadedCertificate, load_certificate
from core.tokens.issuance import (
    CURRENT,
    Current,
    IssuedToken,
    TokenView,
    list_tokens,
    prepare_token,
)
from core.tokens.names import clean_name, normalize_name
from core.tokens.resend import APPLE
from core.vault import Vault

MAX_CERTIFICATES = 250
EXPIRING_SOON = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class InstallFacts:
    """Where a connected server's active token stands with its install (core.connections)."""

    status: str | None  # pending | installed | replaced; None before any install was queued
    attempts: int = 0
    error: str | None = None
    next_try: datetime | None = None
    installed_at: datetime | None = None  # when the MDM server accepted the pushed token


@dataclass(frozen=True, slots=True)
class ServerView:
    """What a user sees of one server."""

    id: int
    name: str
    release_devices: bool
    created_by: str
    created_at: datetime
    certificate_subject: str | None
    certificate_not_after: datetime | None
    token_id: int | None
    token_issued_at: datetime | None
    token_expires_at: datetime | None
    downloaded_by: str | None
    token_installed_at: datetime | None = None
    token_last_used_at: datetime | None = None
    replaced_at: datetime | None = None  # when this server's latest replaced token was replaced
    old_presented_at: datetime | None = None  # a replaced token's last refused /session
    token_source: str | None = None  # "apple": downloaded from Apple and taken in (Apple mode)
    apple_id: str | None = None  # the server's id at Apple, once linked (Apple mode)
    new_token_asked_at: datetime | None = None  # an open checklist asks to replace the token
    mdm_label: str | None = None  # set by core.connections.state.annotate when connected
    install_note: str | None = None
    install: InstallFacts | None = None

    @property
    def apple(self) -> bool:
        """Its tokens come from Apple School Manager (Apple mode), not from mdmbot."""
        return self.token_source == APPLE or self.apple_id is not None

    def state(self, now: datetime) -> str:
        """`no token`, `expired`, `expiring` (within 30 days) or `ok`."""
        if self.token_expires_at is None:
            return "no token"
        if self.token_expires_at <= now:
            return "expired"
        if self.token_expires_at - now <= EXPIRING_SOON:
            return "expiring"
        return "ok"

    def days_left(self, now: datetime) -> int | None:
        """Whole days until the active token expires (negative once expired)."""
        if self.token_expires_at is None:
            return None
        return (self.token_expires_at - now) // timedelta(days=1)


def find_server_by_id(session: Session, server_id: object) -> Server:
    """The live server with this id (ids arrive from buttons and metadata as text)."""
    try:
        server = session.get(Server, int(str(server_id)))
    except ValueError:
        server = None
    if server is None or server.removed_at is not None:
        raise NotFound("That MDM server no longer exists.")
    return server


def server_of_token(session: Session, token_id: int) -> tuple[Server, Token]:
    """The live server a token belongs to, with the token."""
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound("That MDM server no longer exists.")
    return find_server_by_id(session, token.server_id), token


def find_server(session: Session, name: str) -> Server:
    """The live server called `name` (compared after normalisation)."""
    key = _key_or_none(name)
    server = None
    if key is not None:
        server = session.exec(select(Server).where(Server.normalized_name == key)).first()
    if server is None:
        raise NotFound(f"There is no MDM server called “{name.strip()}”.")
    return server


def add_server(
    session: Session,
    vault: Vault,
    actor: Actor,
    *,
    name: str,
    certificate: bytes | LoadedCertificate,
    release_devices: bool,
    now: datetime,
) -> IssuedToken:
    """Link a new server and prepare its first token (pending until delivered and activated)."""
    loaded = loaded_certificate(certificate, now)
    authorize(session, actor, Permission.MANAGE_SERVERS)
    display = clean_name(name)
    key = check_name_free(session, display)
    live = session.exec(
        select(func.count()).select_from(Certificate).where(col(Certificate.active))
    ).one()
    if live >= MAX_CERTIFICATES:
        raise InvalidInput(f"Apple allows at most {MAX_CERTIFICATES} MDM server certificates.")
    server = Server(
        name=display,
        normalized_name=key,
        release_devices=release_devices,
        created_by=actor.label,
        created_at=now,
    )
    session.add(server)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        raise DuplicateName(_duplicate(display)) from exc
    cert = store_certificate(session, server, loaded, actor, now)
    audit.record(
        session,
        actor,
        "server.add",
        display,
        now,
        release_devices=release_devices,
        certificate=loaded.fingerprint_sha256,
    )
    return prepare_token(session, vault, actor, server, cert, now, loaded=loaded)


def check_name_free(session: Session, name: str) -> str:
    """The normalised key of a clean `name` no server has; DuplicateName otherwise."""
    key = normalize_name(name)
    existing = session.exec(select(Server.name).where(Server.normalized_name == key)).first()
    if existing is not None:
        raise DuplicateName(_duplicate(existing))
    return key


def loaded_certificate(certificate: bytes | LoadedCertificate, now: datetime) -> LoadedCertificate:
    """The certificate parsed before any statement, so no write transaction waits on parsing."""
    if isinstance(certificate, LoadedCertificate):
        return certificate
    return load_certificate(certificate, now=now)


def _duplicate(existing: str) -> str:
    return (
        f"An MDM server called “{existing}” already exists; names that differ only in case, "
        "spacing or character width count as the same."
    )


def store_certificate(
    session: Session, server: Server, loaded: LoadedCertificate, actor: Actor, now: datetime
) -> Certificate:
    """Save an uploaded certificate; it becomes active with the first token issued to it."""
    assert server.id is not None
    cert = Certificate(
        server_id=server.id,
        pem=loaded.pem,
        fingerprint_sha256=loaded.fingerprint_sha256,
        subject=loaded.subject,
        not_after=loaded.not_after,
        uploaded_by=actor.label,
        uploaded_at=now,
    )
    session.add(cert)
    session.flush()
    return cert


def edit_server(
    session: Session,
    actor: Actor,
    name: str,
    *,
    now: datetime,
    rename: str | None = None,
    release_devices: bool | None = None,
) -> Server:
    """Rename a server or change whether it may release devices."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    server = find_server(session, name)
    if server.apple_id:  # Apple mode: the next sync would undo the change
        raise InvalidInput(
            f"“{server.name}” is Apple's: rename it or change its device release in Apple School "
            "Manager; the next sync brings the change here."
        )
    changes: dict[str, object] = {}
    if rename is not None and clean_name(rename) != server.name:
        display, key = clean_name(rename), normalize_name(rename)
        clash = session.exec(select(Server).where(Server.normalized_name == key)).first()
        if clash is not None and clash.id != server.id:
            raise DuplicateName(_duplicate(clash.name))
        changes["name"] = [server.name, display]
        server.name, server.normalized_name = display, key
    if release_devices is not None and release_devices != server.release_devices:
        changes["release_devices"] = [server.release_devices, release_devices]
        server.release_devices = release_devices
    if not changes:
        return server
    session.add(server)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        raise DuplicateName(_duplicate(server.name)) from exc
    audit.record(session, actor, "server.edit", server.name, now, **changes)
    return server


def token_history(session: Session, name: str) -> list[TokenView]:
    """The tokens of the live server called `name`, or of the removed servers that were."""
    try:
        return list_tokens(session, find_server(session, name))
    except NotFound:
        key = _key_or_none(name)
        removed = session.exec(select(Server).where(col(Server.removed_at).is_not(None))).all()
        named = [s for s in removed if key is not None and _key_or_none(s.name) == key]
        if not named:
            raise
    views = [view for server in named for view in list_tokens(session, server)]
    return sorted(views, key=lambda v: (v.issued_at, v.id), reverse=True)


def _key_or_none(name: str) -> str | None:
    try:
        return normalize_name(name)
    except InvalidInput:
        return None


def _latest_of_replaced(column: str) -> Any:
    """The latest `column` of the listed server's replaced tokens (NULL if none)."""
    old = sa.orm.aliased(Token)
    return (
        sa.select(sa.func.max(getattr(old, column)))
        .where(col(old.server_id) == col(Server.id), col(old.status) == "superseded")
        .correlate(Server)
        .scalar_subquery()
    )


def _new_token_asked() -> Any:
    """When an open departure or password-change checklist first asked to replace the active
    token (NULL if none does)."""
    return (
        sa.select(sa.func.min(col(RotationCase.opened_at)))
        .join(RotationItem, col(RotationItem.case_id) == col(RotationCase.id))
        .where(
            col(RotationItem.token_id) == col(Token.id),
            col(RotationItem.done_at).is_(None),
            col(RotationCase.status) == "open",
        )
        .correlate(Token)
        .scalar_subquery()
    )


@cache
def listing() -> sa.Select[Any]:
    """The statement listing every live server with its active certificate and token."""
    columns: list[Any] = [
        Server.id,
        Server.name,
        Server.release_devices,
        Server.created_by,
        Server.created_at,
        Certificate.subject,
        Certificate.not_after,
        Token.id,
        Token.issued_at,
        Token.expires_at,
        Token.downloaded_by,
        Token.installed_at,
        Token.last_used_at,
        _latest_of_replaced("superseded_at"),  # when the latest replaced token was replaced
        _latest_of_replaced("last_rejected_at"),  # a replaced token's last refused use
        Token.source,
        Server.apple_id,
        _new_token_asked(),
    ]
    return (
        sa.select(*columns)
        .outerjoin(
            Token,
            sa.and_(col(Token.server_id) == col(Server.id), col(Token.status) == "active"),
        )
        .outerjoin(
            Certificate,
            sa.and_(col(Certificate.server_id) == col(Server.id), col(Certificate.active)),
        )
        .where(col(Server.removed_at).is_(None))
        .order_by(col(Server.normalized_name))
    )


def list_servers(
    db: Session | sa.Connection, *, server_id: int | None = None
) -> list[ServerView]:
    """Every live server (or the one with `server_id`) with its active certificate and token."""
    query = listing()
    if server_id is not None:
        query = query.where(col(Server.id) == server_id)
    return [ServerView(*row) for row in connection_of(db).execute(query)]


def get_server_view(session: Session, name: str) -> ServerView:
    """One live server as a user sees it."""
    return list_servers(session, server_id=find_server(session, name).id)[0]


def get_server_view_by_id(session: Session, server_id: object) -> ServerView:
    """One live server by id, as a user sees it."""
    return list_servers(session, server_id=find_server_by_id(session, server_id).id)[0]


def replace_certificate(
    session: Session,
    vault: Vault,
    actor: Actor,
    name: str,
    certificate: bytes | LoadedCertificate,
    now: datetime,
    *,
    expected: int | Current | None = CURRENT,
) -> IssuedToken:
    """Upload a new public key: a new token is prepared, and activating it retires the old one."""
    loaded = loaded_certificate(certificate, now)
    authorize(session, actor, Permission.MANAGE_SERVERS)
    server = find_server(session, name)
    cert = store_certificate(session, server, loaded, actor, now)
    audit.record(
        session,
        actor,
        "certificate.replace",
        server.name,
        now,
        certificate=loaded.fingerprint_sha256,
    )
    return prepare_token(
        session, vault, actor, server, cert, now, loaded=loaded, expected=expected
    )
