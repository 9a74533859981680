"""What people see of connections: install state beside each server, connected tokens."""

from __future__ import annotations

from dataclasses import replace

from sqlmodel import Session, col, select

from core.connections.installs import failure_text
from core.connections.links import ConnectionSpec
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


def annotate(session: Session, views: list[ServerView]) -> list[ServerView]:
    """The views with their connection and install state (for the App Home and `/mdm show`)."""
    notes = install_notes(session, [v.token_id for v in views if v.token_id is not None])
    annotated = []
    for view in views:
        found = notes.get(view.token_id or 0)
        if found is None:
            annotated.append(view)
            continue
        label, note = found
        annotated.append(replace(view, mdm_label=label, install_note=note))
    return annotated


def install_notes(session: Session, token_ids: list[int]) -> dict[int, tuple[str, str]]:
    """(connection label, install note) of each of these tokens whose server is connected."""
    rows = session.exec(
        select(Token.id, MdmConnection)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(col(Token.id).in_(token_ids))
    ).all()
    installs = session.exec(
        select(TokenInstall).where(col(TokenInstall.token_id).in_([t for t, _ in rows]))
    ).all()
    by_token = {i.token_id: i for i in installs}
    notes: dict[int, tuple[str, str]] = {}
    for token_id, row in rows:
        label = ConnectionSpec(row.kind, row.url, row.dep_name, command=row.command).label()
        install = by_token.get(token_id or 0)
        notes[token_id or 0] = (
            label,
            install_note(
                install.status if install else None,
                label,
                install.attempts if install else 0,
                install.last_error if install else None,
            ),
        )
    return notes


def connected_tokens(session: Session, token_ids: list[int]) -> set[int]:
    """Those of these tokens whose server installs through a connection."""
    found = session.exec(
        select(Token.id)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(col(Token.id).in_(token_ids))
    ).all()
    return {token_id for token_id in found if token_id is not None}
