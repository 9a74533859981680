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
    ids = [v.id for v in views]
    rows = session.exec(select(MdmConnection).where(col(MdmConnection.server_id).in_(ids))).all()
    specs = {
        r.server_id: ConnectionSpec(r.kind, r.url, r.dep_name, command=r.command) for r in rows
    }
    tokens = [v.token_id for v in views if v.id in specs and v.token_id is not None]
    found = session.exec(select(TokenInstall).where(col(TokenInstall.token_id).in_(tokens))).all()
    by_token = {i.token_id: i for i in found}
    annotated = []
    for view in views:
        spec = specs.get(view.id)
        if spec is None:
            annotated.append(view)
            continue
        install = by_token.get(view.token_id or 0)
        note = install_note(
            install.status if install else None,
            spec.label(),
            install.attempts if install else 0,
            install.last_error if install else None,
        )
        annotated.append(replace(view, mdm_label=spec.label(), install_note=note))
    return annotated


def connected_tokens(session: Session, token_ids: list[int]) -> set[int]:
    """Those of these tokens whose server installs through a connection."""
    found = session.exec(
        select(Token.id)
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(col(Token.id).in_(token_ids))
    ).all()
    return {token_id for token_id in found if token_id is not None}
