"""What people see of connections: install state beside each server, connected tokens."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.connections.installs import failure_text
from core.connections.links import ConnectionSpec
from core.db import connection_of
from core.models import MdmConnection, Token, TokenInstall
from core.tokens.servers import ServerView


def install_note(status: str | None, label: str, attempts: int, error: str | None) -> str:
    """Where the active token's install stands, before its MDM server first used it."""
    if status == "installed":
        return f"Installed in {label} — waiting for its first use"
    if status == "pending" and error:
        text = failure_text(attempts, error)
        return f"{text[:1].upper()}{text[1:]} mdmbot keeps retrying."
    if status == "pending":
        return f"Being installed into {label}"
    return f"Connected to {label}; not installed yet"


def annotate(db: Session | sa.Connection, views: list[ServerView]) -> list[ServerView]:
    """The views with their connection and install state (for the App Home and `/mdm show`)."""
    notes = install_notes(db, [v.token_id for v in views if v.token_id is not None])
    annotated = []
    for view in views:
        found = notes.get(view.token_id or 0)
        if found is None:
            annotated.append(view)
            continue
        label, note = found
        annotated.append(replace(view, mdm_label=label, install_note=note))
    return annotated


@cache
def _notes_query() -> Any:
    """Each listed token's connection and install, built once (run on every `/mdm list`)."""
    return (
        sa.select(
            col(Token.id),
            col(MdmConnection.kind),
            col(MdmConnection.url),
            col(MdmConnection.dep_name),
            col(MdmConnection.command),
            col(TokenInstall.status),
            col(TokenInstall.attempts),
            col(TokenInstall.last_error),
        )
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .outerjoin(TokenInstall, col(TokenInstall.token_id) == col(Token.id))
        .where(col(Token.id).in_(sa.bindparam("ids", expanding=True)))
    )


def install_notes(
    db: Session | sa.Connection, token_ids: list[int]
) -> dict[int, tuple[str, str]]:
    """(connection label, install note) of each of these tokens whose server is connected."""
    if not token_ids:
        return {}
    rows = connection_of(db).execute(_notes_query(), {"ids": token_ids})
    notes: dict[int, tuple[str, str]] = {}
    for token_id, kind, url, dep_name, command, status, attempts, error in rows:
        label = ConnectionSpec(kind, url, dep_name, command=command).label()
        notes[int(token_id)] = (label, install_note(status, label, attempts or 0, error))
    return notes


def connected_tokens(session: Session, token_ids: list[int]) -> set[int]:
    """Those of these tokens whose server installs through a connection."""
    found = session.exec(
        select(Token.id)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(col(Token.id).in_(token_ids))
    ).all()
    return {token_id for token_id in found if token_id is not None}
