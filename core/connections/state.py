"""What people see of connections: install state beside each server, connected tokens."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import fields, replace
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.connections.installs import failure_text
from core.connections.links import ConnectionSpec
from core.connections.server_state import ServerState, state_of
from core.db import connection_of, data_marker
from core.models import MdmConnection, Server, Token, TokenInstall
from core.settings import SCHOOL_PORTAL
from core.tokens import servers
from core.tokens.servers import InstallFacts, ServerView


def install_note(status: str | None, label: str, attempts: int, error: str | None) -> str:
    """Where the active token's install stands, before its MDM server first used it."""
    if status == "installed":
        return f"Installed in {label} — waiting for its first use"
    if status == "pending" and error:
        text = failure_text(attempts, error)  # what happens next is the state's (state_of)
        return f"{text[:1].upper()}{text[1:]}"
    if status == "pending":
        return f"Being installed into {label}"
    return f"Connected to {label}; not installed yet"


def annotate(db: Session | sa.Connection, views: list[ServerView]) -> list[ServerView]:
    """The views with their connection and install state (for the App Home and `/mdm show`)."""
    notes = install_notes(db, [v.token_id for v in views if v.token_id is not None])
    return [_noted(view, notes.get(view.token_id or 0)) for view in views]


def listed(db: Session | sa.Connection) -> list[ServerView]:
    """Every live server, annotated, in one statement (`/mdm list` and the App Home); read
    again only once the data changed (`data_marker`)."""
    connection = connection_of(db)
    marker = data_marker(connection)
    found = _LISTED.get(marker) if marker is not None else None
    if found is not None:
        return list(found)
    views = [_annotated(row) for row in connection.execute(_annotated_listing())]
    if marker is not None:
        with _LISTED_LOCK:
            _LISTED[marker] = tuple(views)
            while len(_LISTED) > KEPT_LISTINGS:
                del _LISTED[next(iter(_LISTED))]
    return views


KEPT_LISTINGS = 8  # one per pooled connection (they take turns), each with its own marker
_LISTED: dict[Hashable, tuple[ServerView, ...]] = {}
_LISTED_LOCK = threading.Lock()


_WIDTH = len(fields(ServerView)) - 3  # a listing row's columns before the connection's


def _annotated(row: Any) -> ServerView:
    """A listing row as a view with its connection and install (when connected)."""
    view = ServerView(*row[:_WIDTH])
    if row[_WIDTH] is None or view.token_id is None:
        return view
    return _noted(view, _note(*row[_WIDTH:]))


Note = tuple[str, str, InstallFacts]


def _noted(view: ServerView, note: Note | None) -> ServerView:
    if note is None:
        return view
    label, words, facts = note
    return replace(view, mdm_label=label, install_note=words, install=facts)


def _note(
    kind: str,
    url: str,
    dep_name: str,
    command: str,
    status: str | None,
    attempts: int | None,
    error: str | None,
    next_try: datetime | None,
    installed_at: datetime | None,
) -> Note:
    label = ConnectionSpec(kind, url, dep_name, command=command).label()
    facts = InstallFacts(status, attempts or 0, error, next_try, installed_at)
    return label, install_note(status, label, attempts or 0, error), facts


_CONNECTION_COLUMNS = (
    col(MdmConnection.kind),
    col(MdmConnection.url),
    col(MdmConnection.dep_name),
    col(MdmConnection.command),
    col(TokenInstall.status),
    col(TokenInstall.attempts),
    col(TokenInstall.last_error),
    col(TokenInstall.next_attempt_at),
    col(TokenInstall.installed_at),
)


@cache
def _annotated_listing() -> Any:
    """`servers.listing()` with each server's connection and its active token's install."""
    return (
        servers.listing()
        .add_columns(*_CONNECTION_COLUMNS)
        .outerjoin(MdmConnection, col(MdmConnection.server_id) == col(Server.id))
        .outerjoin(TokenInstall, col(TokenInstall.token_id) == col(Token.id))
    )


@cache
def _notes_query() -> Any:
    """Each listed token's connection and install, built once."""
    return (
        sa.select(col(Token.id), *_CONNECTION_COLUMNS)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .outerjoin(TokenInstall, col(TokenInstall.token_id) == col(Token.id))
        .where(col(Token.id).in_(sa.bindparam("ids", expanding=True)))
    )


def install_notes(db: Session | sa.Connection, token_ids: list[int]) -> dict[int, Note]:
    """(label, install note, install facts) of each of these tokens whose server is connected."""
    if not token_ids:
        return {}
    rows = connection_of(db).execute(_notes_query(), {"ids": token_ids})
    return {int(token_id): _note(*rest) for token_id, *rest in rows}


def connected_tokens(session: Session, token_ids: list[int]) -> set[int]:
    """Those of these tokens whose server installs through a connection."""
    found = session.exec(
        select(Token.id)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(col(Token.id).in_(token_ids))
    ).all()
    return {token_id for token_id in found if token_id is not None}


def server_state(
    db: Session | sa.Connection, server_id: int, now: datetime, portal: str = SCHOOL_PORTAL
) -> tuple[ServerView, ServerState] | None:
    """One live server, annotated, with its state as of `now` (None once removed); `portal`
    names Apple's portal in Apple mode."""
    query = _annotated_listing().where(col(Server.id) == server_id)
    row = connection_of(db).execute(query).first()
    if row is None:
        return None
    view = _annotated(row)
    return view, state_of(view, now, portal)


def server_of_token(db: Session | sa.Connection, token_id: int) -> int | None:
    """The server a token belongs to."""
    query = sa.select(col(Token.server_id)).where(col(Token.id) == token_id)
    found: int | None = connection_of(db).execute(query).scalar()
    return found
