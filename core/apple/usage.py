""""In use" in Apple mode: Apple saw the server's MDM connect after its token was installed.

mdmbot serves no DEP API in Apple mode, so no `/session` tells it which token an MDM server uses.
Apple does: `lastConnectedDateTime` of the server (read by the sync into
`Server.apple_last_connected_at`). A token Apple issued stops the previous one at once (DESIGN.md
§2), so a connection after the new token was installed (pushed through the connection, else taken
in) was made with it: the token is in use from then on, and the checklist items of the tokens it
replaced are done, as at a first `/session` in the sandbox.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from core.dep.feedback import record_use
from core.models import Server, Token, TokenInstall, TokenStatus
from core.tokens.resend import APPLE

APPLE_CLIENT = "Apple"  # who saw the MDM server connect, as `installed_from` (both portals)


def installed_since(session: Session, token: Token) -> datetime | None:
    """When the MDM server got the token: its install, else when it was taken in."""
    install = session.exec(select(TokenInstall).where(TokenInstall.token_id == token.id)).first()
    if install is not None:
        return install.installed_at  # None while the install has not succeeded
    return token.delivery_started_at or token.issued_at


def note_apple_use(session: Session, now: datetime) -> tuple[int, ...]:
    """Mark active Apple tokens in use when Apple saw their server connect since their install;
    returns the rotation cases whose checklist changed."""
    rows = session.exec(
        select(Token, Server)
        .join(Server, col(Server.id) == col(Token.server_id))
        .where(
            Token.status == TokenStatus.ACTIVE,
            Token.source == APPLE,
            col(Server.apple_last_connected_at).is_not(None),
            col(Server.removed_at).is_(None),
        )
    ).all()
    changed: set[int] = set()
    for token, server in rows:
        seen = server.apple_last_connected_at
        since = installed_since(session, token)
        # Apple gives whole seconds: a connection within the install's second counts.
        if seen is None or since is None or seen < since.replace(microsecond=0):
            continue
        if token.installed_at is None:
            changed.update(record_use(session, token, seen, APPLE_CLIENT, "lastConnectedDateTime"))
        elif token.last_used_at is None or token.last_used_at < seen:
            token.last_used_at, token.last_used_from = seen, APPLE_CLIENT
            session.add(token)
    return tuple(sorted(changed))
