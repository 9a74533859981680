"""The token feedback loop: which tokens MDM servers really installed, and who presents dead ones.

A token is *installed* at its first successful `/session`; that is also when the rotation items of
the tokens it replaced are done. A replaced token presented again is reported once, then at most
once a day while it goes on: each report is claimed in AlertDelivery (kind `replaced`, threshold =
whole days since the replacement), so replicas racing on the same attempt post it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core import audit
from core.models import AlertDelivery, RotationItem, Server, Token, TokenStatus
from core.people.alerts import insert_claim, reopen_replaced
from core.people.rotation import tick_rotations
from core.roles import Actor

REPLACED = "replaced"
NOT_INSTALLED = "install"
INSTALL_GRACE = timedelta(hours=24)
DAY = timedelta(days=1)
MDM_SERVER = Actor("mdm-server", operator=True)
LAST_SEEN_EVERY = timedelta(seconds=30)  # `last seen` is rewritten at most this often


@dataclass(frozen=True)
class ReplacedTokenAlert:
    """A replaced token an MDM server still presents (claimed: post it, then mark it)."""

    delivery_id: int
    token_id: int
    server_name: str
    replaced_at: datetime
    reason: str | None
    attempts: int
    last_from: str | None
    last_at: datetime
    new_token_id: int | None = None
    new_downloaded_by: str | None = None
    claimed_at: datetime | None = None  # the claim to hold while posting


@dataclass(frozen=True)
class InstallReminder:
    """A new token still not installed a day after it was issued (claimed)."""

    delivery_id: int
    token_id: int
    server_name: str
    issued_at: datetime
    downloaded_by: str
    old_last_seen: datetime | None


def record_use(
    session: Session, token: Token, now: datetime, client: str, user_agent: str
) -> tuple[int, ...]:
    """A successful `/session`: last seen now; on first use, installed and its rotations done.

    Returns the rotation cases whose checklist changed.
    """
    if token.installed_at is not None:
        if token.last_used_at is None or token.last_used_at < now - LAST_SEEN_EVERY:
            token.last_used_at, token.last_used_from = now, client[:64]
            session.add(token)
        return ()
    token.last_used_at, token.last_used_from = now, client[:64]
    token.installed_at, token.installed_from = now, client[:64]
    token.installed_user_agent = user_agent[:256]
    session.add(token)
    reopen_replaced(session, token, (REPLACED, NOT_INSTALLED))
    server = session.get(Server, token.server_id)
    audit.record(
        session,
        MDM_SERVER,
        "token.install",
        server.name if server else str(token.server_id),
        now,
        token=token.id,
        client=client[:64],
        user_agent=user_agent[:256],
    )
    replaced = session.exec(
        select(Token.id).where(
            Token.server_id == token.server_id,
            col(Token.status).in_([TokenStatus.SUPERSEDED]),
            col(Token.superseded_at) <= now,
        )
    ).all()
    ticked, _ = tick_rotations(
        session, Actor(token.downloaded_by), [i for i in replaced if i is not None], now
    )
    if not ticked:
        return ()
    cases = session.exec(
        select(RotationItem.case_id).where(col(RotationItem.id).in_(ticked)).distinct()
    ).all()
    return tuple(sorted(cases))


def record_rejected(
    session: Session, token: Token, now: datetime, client: str
) -> ReplacedTokenAlert | None:
    """Count an attempt with a replaced token; claim today's report when none was claimed."""
    assert token.id is not None and token.superseded_at is not None
    session.execute(
        sa.update(Token)
        .where(col(Token.id) == token.id)
        .values(
            rejected_attempts=col(Token.rejected_attempts) + 1,
            last_rejected_at=now,
            last_rejected_from=client[:64],
        )
    )
    day = max(0, (now - token.superseded_at) // DAY)
    delivery_id = insert_claim(session, token.id, day, now, kind=REPLACED)
    if delivery_id is None:
        delivery_id = _reclaim_failed(session, token.id, day, now)
    if delivery_id is None:
        return None
    attempts = session.exec(select(Token.rejected_attempts).where(Token.id == token.id)).one()
    server = session.get(Server, token.server_id)
    new = session.exec(
        select(Token.id, Token.downloaded_by).where(
            Token.server_id == token.server_id, Token.status == TokenStatus.ACTIVE
        )
    ).first()
    return ReplacedTokenAlert(
        delivery_id,
        token.id,
        server.name if server else "?",
        token.superseded_at,
        token.reason,
        attempts,
        client[:64],
        now,
        new[0] if new else None,
        new[1] if new else None,
        claimed_at=now,
    )


def claim_install_reminders(session: Session, now: datetime) -> list[InstallReminder]:
    """Claim today's reminder for each active token not installed 24 hours after issue while
    a token it replaced is still presented or was in use."""
    old = sa.orm.aliased(Token)
    rows = session.execute(
        sa.select(
            col(Token.id),
            col(Server.name),
            col(Token.issued_at),
            col(Token.downloaded_by),
            sa.func.max(sa.func.coalesce(old.last_rejected_at, old.last_used_at)),
        )
        .join(Server, col(Server.id) == col(Token.server_id))
        .join(
            old,
            sa.and_(
                col(old.server_id) == col(Token.server_id),
                col(old.status) == TokenStatus.SUPERSEDED,
            ),
        )
        .where(
            col(Token.status) == TokenStatus.ACTIVE,
            col(Token.installed_at).is_(None),
            col(Token.issued_at) <= now - INSTALL_GRACE,
            sa.or_(col(old.last_used_at).is_not(None), col(old.rejected_attempts) > 0),
        )
        .group_by(col(Token.id), col(Server.name), col(Token.issued_at), col(Token.downloaded_by))
    ).all()
    reminders = []
    for token_id, name, issued_at, downloaded_by, seen in rows:
        day = (now - issued_at) // DAY
        delivery_id = insert_claim(session, token_id or 0, day, now, kind=NOT_INSTALLED)
        if delivery_id is not None:
            reminders.append(
                InstallReminder(delivery_id, token_id or 0, name, issued_at, downloaded_by, seen)
            )
    return reminders


def install_counts(session: Session) -> dict[str, int]:
    """Active tokens by whether their MDM server has installed them."""
    rows = session.exec(
        select(col(Token.installed_at).is_not(None), func.count())
        .where(Token.status == TokenStatus.ACTIVE)
        .group_by(col(Token.installed_at).is_not(None))
    ).all()
    counts = {"installed": 0, "not_installed": 0}
    for installed, number in rows:
        counts["installed" if installed else "not_installed"] += number
    return counts


def _reclaim_failed(session: Session, token_id: int, day: int, now: datetime) -> int | None:
    """Today's report failed to post (Slack was down): the next attempt takes it again."""
    found = session.exec(
        select(AlertDelivery.id).where(
            AlertDelivery.token_id == token_id,
            AlertDelivery.kind == REPLACED,
            AlertDelivery.threshold == day,
            AlertDelivery.status == "failed",
        )
    ).first()
    if found is None:
        return None
    taken = session.execute(
        sa.update(AlertDelivery)
        .where(col(AlertDelivery.id) == found, col(AlertDelivery.status) == "failed")
        .values(status="pending", claimed_at=now, attempts=col(AlertDelivery.attempts) + 1)
    )
    return found if cast(Any, taken).rowcount == 1 else None


def reclaim_replaced(
    session: Session, now: datetime, stale_after: timedelta = timedelta(minutes=15)
) -> list[ReplacedTokenAlert]:
    """Take the replaced-token reports that failed or were left pending (a process without
    Slack claimed them) so that a process with Slack posts them."""
    rows = session.exec(
        select(AlertDelivery, Token, Server.name)
        .join(Token, col(Token.id) == col(AlertDelivery.token_id))
        .join(Server, col(Server.id) == col(Token.server_id))
        .where(
            AlertDelivery.kind == REPLACED,
            sa.or_(
                col(AlertDelivery.status) == "failed",
                sa.and_(
                    col(AlertDelivery.status) == "pending",
                    col(AlertDelivery.claimed_at) < now - stale_after,
                ),
            ),
        )
        .order_by(col(AlertDelivery.id))
    ).all()
    taken: list[ReplacedTokenAlert] = []
    for delivery, token, name in rows:
        claimed = session.execute(
            sa.update(AlertDelivery)
            .where(
                col(AlertDelivery.id) == delivery.id,
                col(AlertDelivery.status) == delivery.status,
                col(AlertDelivery.claimed_at) == delivery.claimed_at,
            )
            .values(status="pending", claimed_at=now, attempts=col(AlertDelivery.attempts) + 1)
        )
        if cast(Any, claimed).rowcount != 1 or token.superseded_at is None:
            continue
        taken.append(
            ReplacedTokenAlert(
                delivery.id or 0,
                token.id or 0,
                name,
                token.superseded_at,
                token.reason,
                token.rejected_attempts,
                token.last_rejected_from,
                token.last_rejected_at or delivery.claimed_at,
                claimed_at=now,
            )
        )
    return taken
