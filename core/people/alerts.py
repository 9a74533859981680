"""Expiry alert sweeps: claim each (token, threshold) in AlertDelivery before anything is posted.

How a sweep finds work without reading every token (Let's Encrypt's expiration mailer: never
examine a token more times than it has reminders): `Token.next_alert_at` is NULL until a sweep
first examines the token, then holds the moment the next threshold window opens, or NEVER once the
on-expiry alert is claimed. A sweep reads only active tokens with NULL and `expires_at` within the
largest threshold, plus those whose `next_alert_at` has passed; both are index range scans.

Claims are INSERTs relying on the unique (token, kind, threshold) constraint, each in a SAVEPOINT,
so a concurrent sweep's duplicate is skipped. The caller must COMMIT the claims before posting,
then record the outcome with `mark_sent` / `mark_failed` in a later unit of work. Failed deliveries
and pending ones older than `stale_after` (a crash between claim and post) are re-claimed by a
conditional UPDATE, so a lost alert is retried and two racing sweeps cannot both take it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from core.errors import NotFound
from core.models import AlertDelivery, MdmConnection, Person, Server, Token, TokenStatus
from core.people.lifecycle import DAY, due_threshold, next_check_at, thresholds

KIND = "expiry"
NEVER = datetime(9999, 12, 31, tzinfo=UTC)  # next_alert_at once the on-expiry alert is claimed
_CHUNK = 500


@dataclass(frozen=True)
class DueAlert:
    """An expiry alert to post; threshold is in days, 0 meaning the token has expired."""

    delivery_id: int
    token_id: int
    server_name: str
    threshold: int
    expires_at: datetime
    downloaded_by: str
    downloaded_by_name: str | None
    issued_at: datetime


def claim_due_alerts(
    session: Session,
    now: datetime,
    alert_days: Sequence[int],
    *,
    stale_after: timedelta = timedelta(minutes=15),
    limit: int | None = None,
) -> list[DueAlert]:
    """Claim every alert due at `now`: new, failed and stale pending ones; commit, then post."""
    claims: list[tuple[int, int, int]] = []
    candidates = _candidates(session, now, alert_days, limit)
    seen = _claimed(session, [token_id for token_id, _ in candidates])
    renews = _renewed_at(session, [token_id for token_id, _ in candidates])
    for token_id, expires_at in candidates:
        done = seen.get(token_id, set())
        threshold = due_threshold(expires_at, now, alert_days, done)
        if threshold is not None and threshold >= renews.get(token_id, threshold + 1):
            done = done | {threshold}  # renewed automatically before then: a notice, no alert
        elif threshold is not None:
            delivery_id = insert_claim(session, token_id, threshold, now)
            if delivery_id is not None:
                claims.append((delivery_id, token_id, threshold))
            done = done | {threshold}  # claimed here or by a concurrent sweep
        following = next_check_at(expires_at, min(done) if done else None, alert_days)
        session.execute(
            sa.update(Token)
            .where(col(Token.id) == token_id)
            .values(next_alert_at=following or NEVER)
        )
    for delivery_id, token_id, threshold, status, claimed_at, retry in _retries(
        session, now, stale_after
    ):
        guard = sa.update(AlertDelivery).where(
            col(AlertDelivery.id) == delivery_id,
            col(AlertDelivery.status) == status,
            col(AlertDelivery.claimed_at) == claimed_at,
        )
        if not retry:
            session.execute(guard.values(status="cancelled"))
            continue
        taken = session.execute(
            guard.values(status="pending", claimed_at=now, attempts=col(AlertDelivery.attempts) + 1)
        )
        if cast(Any, taken).rowcount == 1:
            claims.append((delivery_id, token_id, threshold))
    session.flush()
    return _describe(session, claims)


def preview_due_alerts(
    session: Session, now: datetime, alert_days: Sequence[int]
) -> list[DueAlert]:
    """What a sweep at `now` would post, claiming and writing nothing (delivery_id is 0)."""
    planned: list[tuple[int, int, int]] = []
    candidates = _candidates(session, now, alert_days, None)
    seen = _claimed(session, [token_id for token_id, _ in candidates])
    renews = _renewed_at(session, [token_id for token_id, _ in candidates])
    urgent: dict[int, int] = {}
    for token_id, expires_at in candidates:
        threshold = due_threshold(expires_at, now, alert_days, seen.get(token_id, set()))
        if threshold is not None and threshold < renews.get(token_id, threshold + 1):
            planned.append((0, token_id, threshold))
            urgent[token_id] = threshold
    for _, token_id, threshold, _, _, retry in _retries(session, now, timedelta(minutes=15)):
        if retry and urgent.get(token_id, threshold) >= threshold:
            planned.append((0, token_id, threshold))
    return _describe(session, planned)


def hold_claim(session: Session, delivery_id: int, claimed_at: datetime, now: datetime) -> bool:
    """Renew a claim just before posting; False (post nothing) once it was taken over or settled."""
    held = session.execute(
        sa.update(AlertDelivery)
        .where(
            col(AlertDelivery.id) == delivery_id,
            col(AlertDelivery.status) == "pending",
            col(AlertDelivery.claimed_at) == claimed_at,
        )
        .values(claimed_at=max(now, claimed_at))
    )
    return bool(cast(Any, held).rowcount == 1)


def mark_sent(session: Session, delivery_id: int, *, channel: str, ts: str, now: datetime) -> None:
    """Record that the alert was posted as message `ts` in `channel`."""
    delivery = _delivery(session, delivery_id)
    delivery.status, delivery.channel, delivery.ts, delivery.sent_at = "sent", channel, ts, now
    session.add(delivery)


def mark_failed(session: Session, delivery_id: int, error: str, now: datetime) -> None:
    """Record that posting failed (e.g. Slack 429/5xx); the next sweep re-claims it."""
    delivery = _delivery(session, delivery_id)
    delivery.status, delivery.error = "failed", f"{now.isoformat()} {error}"[:1000]
    session.add(delivery)


def _delivery(session: Session, delivery_id: int) -> AlertDelivery:
    delivery = session.get(AlertDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"There is no alert delivery {delivery_id}.")
    return delivery


def _candidates(
    session: Session, now: datetime, alert_days: Sequence[int], limit: int | None
) -> list[tuple[int, datetime]]:
    horizon = now + max(thresholds(alert_days)) * DAY
    active = col(Token.status) == TokenStatus.ACTIVE.value
    fresh = select(Token.id, Token.expires_at).where(
        active, col(Token.next_alert_at).is_(None), col(Token.expires_at) <= horizon
    )
    waiting = select(Token.id, Token.expires_at).where(col(Token.next_alert_at) <= now, active)
    rows = {int(i): e for i, e in [*session.exec(fresh).all(), *session.exec(waiting).all()] if i}
    ordered = sorted(rows.items(), key=lambda row: (row[1], row[0]))
    return ordered if limit is None else ordered[:limit]


def _renewed_at(session: Session, token_ids: list[int]) -> dict[int, int]:
    """Days before expiry at which each of these tokens is renewed automatically, if it is."""
    found: dict[int, int] = {}
    for start in range(0, len(token_ids), _CHUNK):
        rows = session.execute(
            sa.select(col(Token.id), col(MdmConnection.auto_renew_days))
            .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
            .where(
                col(Token.id).in_(token_ids[start : start + _CHUNK]),
                col(MdmConnection.auto_renew_days).is_not(None),
            )
        )
        found.update({int(token_id or 0): int(days or 0) for token_id, days in rows})
    return found


def _claimed(session: Session, token_ids: list[int]) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for start in range(0, len(token_ids), _CHUNK):
        rows = session.exec(
            select(AlertDelivery.token_id, AlertDelivery.threshold).where(
                col(AlertDelivery.token_id).in_(token_ids[start : start + _CHUNK]),
                AlertDelivery.kind == KIND,
            )
        ).all()
        for token_id, threshold in rows:
            seen.setdefault(token_id, set()).add(threshold)
    return seen


def insert_claim(
    session: Session, token_id: int, threshold: int, now: datetime, *, kind: str = KIND
) -> int | None:
    """Claim (token, kind, threshold) in a SAVEPOINT; None when it was already claimed."""
    values = {
        "token_id": token_id,
        "kind": kind,
        "threshold": threshold,
        "status": "pending",
        "claimed_at": now,
        "attempts": 1,
    }
    try:
        with session.begin_nested():
            result = session.execute(sa.insert(AlertDelivery).values(**values))
    except IntegrityError:
        return None
    key = cast(Any, result).inserted_primary_key
    return int(key[0])


def _retries(
    session: Session, now: datetime, stale_after: timedelta
) -> list[tuple[int, int, int, str, datetime, bool]]:
    """Failed or stale deliveries: (id, token, threshold, status, claimed_at, retry or cancel)."""
    table = SQLModel.metadata.tables["alertdelivery"]
    delivery, newer = table.c, table.alias("newer").c
    stale = now - stale_after
    more_urgent = (
        sa.select(newer.id)
        .where(
            newer.token_id == delivery.token_id,
            newer.kind == KIND,
            newer.threshold < delivery.threshold,
            newer.status != "cancelled",
        )
        .exists()
    )
    rows = session.execute(
        sa.select(
            delivery.id,
            delivery.token_id,
            delivery.threshold,
            delivery.status,
            delivery.claimed_at,
            col(Token.status),
            more_urgent,
        )
        .join(Token, col(Token.id) == delivery.token_id)
        .where(
            delivery.kind == KIND,
            sa.or_(
                delivery.status == "failed",
                sa.and_(delivery.status == "pending", delivery.claimed_at < stale),
            ),
        )
        .order_by(delivery.id)
    ).all()
    return [
        (int(i or 0), tid, th, st, at, token_status == TokenStatus.ACTIVE and not bool(urgent))
        for i, tid, th, st, at, token_status, urgent in rows
    ]


def _describe(session: Session, claims: Iterable[tuple[int, int, int]]) -> list[DueAlert]:
    claims = list(claims)
    token_ids = sorted({token_id for _, token_id, _ in claims})
    info: dict[int, tuple[Token, str, str | None]] = {}
    for start in range(0, len(token_ids), _CHUNK):
        rows = session.exec(
            select(Token, Server.name, Person.name)
            .join(Server, col(Server.id) == col(Token.server_id))
            .outerjoin(Person, col(Person.slack_id) == col(Token.downloaded_by))
            .where(col(Token.id).in_(token_ids[start : start + _CHUNK]))
        ).all()
        info.update({token.id or 0: (token, server, person) for token, server, person in rows})
    alerts = [
        DueAlert(
            delivery_id,
            token_id,
            info[token_id][1],
            threshold,
            info[token_id][0].expires_at,
            info[token_id][0].downloaded_by,
            info[token_id][2],
            info[token_id][0].issued_at,
        )
        for delivery_id, token_id, threshold in claims
    ]
    return sorted(alerts, key=lambda a: (a.expires_at, a.token_id, a.threshold))


@dataclass(frozen=True)
class StaleAlert:
    """A posted alert offering to renew a token that was since replaced: edit it to say so."""

    delivery_id: int
    channel: str
    ts: str
    server_name: str
    expires_at: datetime
    reason: str | None
    by: str | None
    at: datetime
    new_expires_at: datetime | None
    new_token_id: int | None = None
    new_downloaded_by: str | None = None
    new_installed_at: datetime | None = None
    server_id: int = 0


def mark_replaced(session: Session, token_ids: Sequence[int], by: str, now: datetime) -> None:
    """Flag every alert about these tokens (posted or still being posted) for one edit."""
    ids = [token_id for token_id in token_ids if token_id]
    if ids:
        session.execute(
            sa.update(AlertDelivery)
            .where(col(AlertDelivery.token_id).in_(ids), col(AlertDelivery.stale_at).is_(None))
            .values(stale_at=now, stale_by=by)
        )


def stale_alerts(session: Session, limit: int = 200) -> list[StaleAlert]:
    """Posted alerts whose token was replaced and that were not edited yet, oldest first."""
    new_token = SQLModel.metadata.tables["token"].alias("new_token")
    new = new_token.c
    columns: list[Any] = [
        AlertDelivery.id,
        AlertDelivery.channel,
        AlertDelivery.ts,
        Server.name,
        Token.expires_at,
        Token.reason,
        AlertDelivery.stale_by,
        AlertDelivery.stale_at,
        new.expires_at,
        new.id,
        new.downloaded_by,
        new.installed_at,
        Token.server_id,
    ]
    rows = session.execute(
        sa.select(*columns)
        .join(Token, col(Token.id) == col(AlertDelivery.token_id))
        .join(Server, col(Server.id) == col(Token.server_id))
        .outerjoin(
            new_token,
            sa.and_(new.server_id == col(Token.server_id), new.status == TokenStatus.ACTIVE.value),
        )
        .where(
            col(AlertDelivery.stale_at).is_not(None),
            col(AlertDelivery.edited_at).is_(None),
            col(AlertDelivery.superseded_at).is_(None),
            col(AlertDelivery.status) == "sent",
            col(AlertDelivery.ts).is_not(None),
        )
        .order_by(col(AlertDelivery.stale_at), col(AlertDelivery.id))
        .limit(limit)
    ).all()
    return [StaleAlert(int(i or 0), str(ch), str(ts), *rest) for i, ch, ts, *rest in rows]


def reopen_replaced(session: Session, token: Token, warnings: Sequence[str] = ()) -> None:
    """`token` is in use: edit its server's replaced alerts once more (they say so), and the
    posted warnings of kinds `warnings` about it or the tokens it replaced."""
    old = select(Token.id).where(
        Token.server_id == token.server_id, Token.status == TokenStatus.SUPERSEDED
    )
    session.execute(
        sa.update(AlertDelivery)
        .where(
            sa.or_(col(AlertDelivery.token_id).in_(old), col(AlertDelivery.token_id) == token.id),
            col(AlertDelivery.kind).in_(warnings),
            col(AlertDelivery.stale_at).is_(None),
        )
        .values(stale_at=token.issued_at, stale_by=token.downloaded_by)
    )
    edit_again(session, token.server_id)


def edit_again(session: Session, server_id: int) -> None:
    """Edit the server's alerts about replaced tokens once more (their new token's state moved)."""
    old = select(Token.id).where(
        Token.server_id == server_id, Token.status == TokenStatus.SUPERSEDED
    )
    session.execute(
        sa.update(AlertDelivery)
        .where(
            col(AlertDelivery.token_id).in_(old),
            col(AlertDelivery.stale_at).is_not(None),
            col(AlertDelivery.edited_at).is_not(None),
        )
        .values(edited_at=None)
    )


def mark_edited(session: Session, delivery_id: int, now: datetime) -> None:
    """Record that the alert now says its token was replaced (it is not edited again)."""
    session.execute(
        sa.update(AlertDelivery)
        .where(col(AlertDelivery.id) == delivery_id, col(AlertDelivery.edited_at).is_(None))
        .values(edited_at=now)
    )
