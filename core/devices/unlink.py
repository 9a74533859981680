"""Unlinking an MDM server: its tokens are revoked and its devices move to their defaults."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, select

from core import audit
from core.devices.changelog import defaults, evacuate_server
from core.errors import InvalidInput
from core.models import Certificate, Device, Server, Token, TokenStatus
from core.people import alerts
from core.people.persons import authorize
from core.people.rotation import tick_rotations
from core.roles import Actor, Permission
from core.settings import SCHOOL_PORTAL
from core.tokens.servers import find_server


def remove_server(
    session: Session, actor: Actor, name: str, now: datetime, portal: str = SCHOOL_PORTAL
) -> Server:
    """Unlink a server: its tokens are revoked and its name freed; one of Apple's (Apple mode)
    is refused, naming Apple's `portal`."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    server = find_server(session, name)
    if server.apple_id:  # Apple mode: the next sync would bring it back
        raise InvalidInput(
            f"“{server.name}” is Apple's: remove it in {portal}; the next sync marks "
            "it removed here (its tokens are kept)."
        )
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


def removal_preview(session: Session, name: str) -> tuple[str, int, int]:
    """What removing a server would do to devices: (its name, moved to a default, unassigned)."""
    server = find_server(session, name)
    targets = {f: s for f, s in defaults(session).items() if s != server.id}
    moved = unassigned = 0
    for family, number in session.exec(
        select(Device.device_family, func.count())
        .where(Device.server_id == server.id)
        .group_by(col(Device.device_family))
    ):
        if family in targets:
            moved += number
        else:
            unassigned += number
    return server.name, moved, unassigned
