"""A token file refused for a server (another certificate, expired): the person is told in one
line; the channel gets one alert per server and file (not one per retry), posted by the Slack
path that refused it or, for the command line, by the next sweep; the App Home shows it until a
token is taken in for the server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from core import audit
from core.errors import InvalidInput
from core.models import Server
from core.roles import Actor


class TokenRefused(InvalidInput):
    """A token file for another certificate, or expired by its name (alerted once)."""


@dataclass(frozen=True)
class Refused:
    """A server's last refused token file."""

    server_id: int
    server_name: str
    reason: str
    refused_by: str
    refused_at: datetime


def note(
    session: Session, actor: Actor, server_id: int, digest: str, reason: str, now: datetime
) -> bool:
    """Remember the refusal; True when this file was not the server's last refused one (an
    alert is due)."""
    server = session.get(Server, server_id, with_for_update=True)
    if server is None or server.token_refused_digest == digest:
        return False
    server.token_refused, server.token_refused_digest = reason, digest
    server.token_refused_by, server.token_refused_at = actor.user_id, now
    server.token_refused_alerted_at = None
    session.add(server)
    audit.record(session, actor, "token.refuse", server.name, now, reason=reason)
    return True


def claim_alerts(session: Session, now: datetime) -> list[Refused]:
    """The refusals whose alert is not posted yet, claimed (a failed post calls `not_posted`)."""
    found = session.exec(
        select(Server)
        .where(
            col(Server.token_refused).is_not(None),
            col(Server.token_refused_alerted_at).is_(None),
            col(Server.removed_at).is_(None),
        )
        .with_for_update(skip_locked=True)
    ).all()
    for server in found:
        server.token_refused_alerted_at = now
        session.add(server)
    return [_refused(server) for server in found]


def not_posted(session: Session, server_id: int) -> None:
    """The alert could not be posted: the next sweep posts it."""
    server = session.get(Server, server_id, with_for_update=True)
    if server is not None and server.token_refused is not None:
        server.token_refused_alerted_at = None
        session.add(server)


def clear(server: Server) -> None:
    """A token was taken in for the server: the refusal is over."""
    server.token_refused = server.token_refused_digest = server.token_refused_by = None
    server.token_refused_at = server.token_refused_alerted_at = None


def shown(session: Session) -> list[Refused]:
    """Every live server's refused token file, for the App Home."""
    found = session.exec(
        select(Server)
        .where(col(Server.token_refused).is_not(None), col(Server.removed_at).is_(None))
        .order_by(col(Server.normalized_name))
    ).all()
    return [_refused(server) for server in found]


def _refused(server: Server) -> Refused:
    assert server.id is not None and server.token_refused_at is not None
    return Refused(server.id, server.name, server.token_refused or "",
                   server.token_refused_by or "", server.token_refused_at)  # fmt: skip
