"""One live message per event: a newer channel message about a server supersedes the older ones."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.models import AlertDelivery, Server, Token


def supersede_older(
    session: Session, delivery_id: int, now: datetime
) -> tuple[str, list[tuple[str, str]]]:
    """Mark the posted messages about this delivery's server, other than it, superseded (they
    are not edited again); the server's name and where each of them is (channel, ts)."""
    found = session.exec(
        select(Token.server_id, Server.name)
        .join(AlertDelivery, col(AlertDelivery.token_id) == col(Token.id))
        .join(Server, col(Server.id) == col(Token.server_id))
        .where(AlertDelivery.id == delivery_id)
    ).first()
    if found is None:
        return "", []
    server_id, name = found
    rows = session.exec(
        select(AlertDelivery.id, AlertDelivery.channel, AlertDelivery.ts)
        .join(Token, col(Token.id) == col(AlertDelivery.token_id))
        .where(
            Token.server_id == server_id,
            AlertDelivery.id != delivery_id,
            AlertDelivery.status == "sent",
            col(AlertDelivery.ts).is_not(None),
            col(AlertDelivery.superseded_at).is_(None),
        )
    ).all()
    if rows:
        session.execute(
            sa.update(AlertDelivery)
            .where(col(AlertDelivery.id).in_([r[0] for r in rows]))
            .values(superseded_at=now)
        )
    return name, [(str(channel), str(ts)) for _, channel, ts in rows]
