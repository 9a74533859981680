"""Unlinking an MDM server: its tokens are revoked and its devices move to their defaults."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from core import audit
from core.devices.changelog import evacuate_server
from core.models import Certificate, Server, Token, TokenStatus
from core.people import alerts
from core.people.persons import authorize
from core.people.rotation import tick_rotations
from core.roles import Actor, Permission
from core.tokens.servers import find_server


def remove_server(session: Session, actor: Actor, name: str, now: datetime) -> Server:
    """Unlink a server: its tokens are revoked and its name freed."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    server = find_server(session, name)
    tokens = session.exec(
        select(Token).where(
            Token.server_id == server.id,
            col(Token.status).in_(
                [TokenStatus.ACTIVE, TokenStatus.PENDING, TokenStatus.DELIVERING]
            ),
        )
    ).all()
    for token in tokens:
        token.status, token.superseded_at, token.reason = TokenStatus.REVOKED, now, "server removed"
        token.next_alert_at = None
        session.add(token)
    for cert in session.exec(select(Certificate).where(Certificate.server_id == server.id)):
        cert.active = False
        session.add(cert)
    moved, unassigned = evacuate_server(session, server, actor.label, now)
    server.normalized_name, server.removed_at = None, now
    session.add(server)
    tick_rotations(session, actor, [t.id for t in tokens if t.id is not None], now)
    alerts.mark_replaced(session, [t.id for t in tokens if t.id is not None], actor.label, now)
    devices = {"devices_to_default": moved, "devices_unassigned": unassigned}
    if not moved and not unassigned:
        devices = {}
    audit.record(
        session, actor, "server.remove", server.name, now, revoked_tokens=len(tokens), **devices
    )
    return server
