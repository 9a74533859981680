"""Rotation cases: tokens to replace after their downloader left or changed their password.

Who may open a case: anyone may report their *own* password change; opening a case for someone
else (`/mdm offboard @user`) needs Permission.MANAGE_SERVERS. Events the bot learns from Slack
itself (a `user_change` with `deleted`, the daily reconciliation) act as the operator-style
SYSTEM actor through `record_departure`. Tokens stay valid until replaced: an item is done when
its token is replaced *and* the MDM server has used the new one (core.dep.feedback.record_use);
the case closes when nothing is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core import audit
from core.errors import InvalidInput, NotFound
from core.models import Person, RotationCase, RotationItem, Server, Token, TokenStatus
from core.people.persons import authorize, ensure_person
from core.roles import Actor, Permission

DEPARTURE = "departure"
PASSWORD_CHANGE = "password_change"  # noqa: S105 (a reason, not a password)
REASONS = (DEPARTURE, PASSWORD_CHANGE)
SYSTEM = Actor("mdmbot", operator=True)
OVERDUE_AFTER = timedelta(days=7)  # a checklist open this long is overdue
OVERDUE_EXPIRY = timedelta(days=14)  # so is one listing a token expiring this soon


@dataclass(frozen=True)
class ItemView:
    """One token of a case; `replaced` is True once the token is no longer active."""

    item_id: int
    token_id: int
    server_name: str
    expires_at: datetime
    done_by: str | None
    done_at: datetime | None
    replaced: bool
    issued_at: datetime | None = None  # when the person downloaded the token


@dataclass(frozen=True)
class CaseView:
    """A rotation case as the checklist shows it."""

    id: int
    person_id: str
    person_name: str | None
    person_email: str | None
    reason: str
    status: str
    opened_at: datetime
    opened_by: str
    channel: str | None
    ts: str | None
    items: tuple[ItemView, ...]
    stale_at: datetime | None = None

    @property
    def left(self) -> tuple[ItemView, ...]:
        """Items not yet done."""
        return tuple(item for item in self.items if item.done_at is None)

    def overdue(self, now: datetime) -> bool:
        """Open for OVERDUE_AFTER, or a token left expires within OVERDUE_EXPIRY."""
        if self.status != "open" or not self.left:
            return False
        soonest = min(item.expires_at for item in self.left)
        return now - self.opened_at >= OVERDUE_AFTER or soonest - now <= OVERDUE_EXPIRY


def open_case(
    session: Session, actor: Actor, person_id: str, reason: str, now: datetime
) -> CaseView | None:
    """Open (or return the already open) case for every active token `person_id` downloaded."""
    if reason not in REASONS:
        raise InvalidInput(f"“{reason}” is not a rotation reason ({', '.join(REASONS)}).")
    if not (reason == PASSWORD_CHANGE and actor.user_id == person_id and not actor.operator):
        authorize(session, actor, Permission.MANAGE_SERVERS)
    ensure_person(session, person_id, now)
    tokens = session.exec(
        select(Token.id)
        .where(Token.downloaded_by == person_id, Token.status == TokenStatus.ACTIVE)
        .order_by(col(Token.expires_at))
    ).all()
    existing = session.exec(
        select(RotationCase)
        .where(
            RotationCase.person_id == person_id,
            RotationCase.status == "open",
            col(RotationCase.reason).in_({reason, DEPARTURE}),
        )
        .order_by(col(RotationCase.reason) != DEPARTURE, col(RotationCase.id))
    ).first()
    if existing is not None and existing.id is not None:
        if existing.reason == DEPARTURE:  # a departure covers tokens activated since it opened
            listed = set(
                session.exec(
                    select(RotationItem.token_id).where(RotationItem.case_id == existing.id)
                ).all()
            )
            added = [t for t in tokens if t is not None and t not in listed]
            _add_items(session, existing.id, added)
            if added:
                audit.record(
                    session,
                    actor,
                    "rotation.extend",
                    person_id,
                    now,
                    case=existing.id,
                    tokens=added,
                )
        return get_case(session, existing.id)
    if not tokens:
        return None
    case = RotationCase(
        person_id=person_id, reason=reason, status="open", opened_by=actor.label, opened_at=now
    )
    try:
        with session.begin_nested():
            session.add(case)
            session.flush()
    except IntegrityError:
        return open_case(session, actor, person_id, reason, now)
    assert case.id is not None
    _add_items(session, case.id, [t for t in tokens if t is not None])
    audit.record(
        session,
        actor,
        "rotation.open",
        person_id,
        now,
        case=case.id,
        reason=reason,
        tokens=list(tokens),
    )
    return get_case(session, case.id)


def record_departure(
    session: Session,
    person_id: str,
    now: datetime,
    *,
    name: str | None = None,
    email: str | None = None,
    real_name: str | None = None,
) -> CaseView | None:
    """A departure Slack reported: the real name over a handle, deactivated, a case as SYSTEM."""
    person = ensure_person(session, person_id, now, name=real_name or name, email=email)
    person.name = real_name or person.name
    if person.deactivated_at is None:
        person.deactivated_at = now
        session.add(person)
        audit.record(session, SYSTEM, "person.deactivate", person_id, now)
    return open_case(session, SYSTEM, person_id, DEPARTURE, now)


def cancel_for_reactivation(session: Session, person_id: str, now: datetime) -> list[int]:
    """A user Slack had deactivated is back: cancel their open departure cases.

    Only a departure Slack reported is undone; an offboarding opened with `/mdm offboard` stays.
    """
    person = session.get(Person, person_id)
    if person is None or person.deactivated_at is None:
        return []
    person.deactivated_at = None
    session.add(person)
    audit.record(session, SYSTEM, "person.reactivate", person_id, now)
    cases = session.exec(
        select(RotationCase).where(
            RotationCase.person_id == person_id,
            RotationCase.status == "open",
            RotationCase.reason == DEPARTURE,
        )
    ).all()
    for case in cases:
        case.status, case.closed_at, case.stale_at = "cancelled", now, now
        session.add(case)
        audit.record(
            session, SYSTEM, "rotation.cancel", person_id, now, case=case.id, why="user reactivated"
        )
    return [case.id for case in cases if case.id is not None]


def claim_post(
    session: Session, case_id: int, now: datetime, every: timedelta | None = None
) -> bool:
    """Claim a checklist's first post (`every` None) or repost before posting; False if taken."""
    due: sa.ColumnElement[bool] = col(RotationCase.last_posted_at).is_(None)
    if every is not None:
        due = sa.or_(due, col(RotationCase.last_posted_at) <= now - every)
    result = session.exec(
        sa.update(RotationCase)
        .where(col(RotationCase.id) == case_id, col(RotationCase.status) == "open", due)
        .values(last_posted_at=now)
    )
    return int(result.rowcount or 0) == 1


def release_post(session: Session, case_id: int) -> None:
    """Give up a claimed post that failed: the next sweep posts the checklist again."""
    session.exec(
        sa.update(RotationCase).where(col(RotationCase.id) == case_id).values(last_posted_at=None)
    )


def record_case_message(
    session: Session, case_id: int, channel: str, ts: str, now: datetime
) -> None:
    """Remember where the checklist was (re-)posted."""
    case = session.get(RotationCase, case_id)
    if case is None:
        raise NotFound(f"There is no rotation case {case_id}.")
    case.channel, case.ts, case.last_posted_at = channel, ts, now
    session.add(case)


def stale_cases(session: Session, limit: int = 200) -> list[int]:
    """Posted checklists that changed since they were last edited (e.g. a token renewed)."""
    ids = session.exec(
        select(RotationCase.id)
        .where(col(RotationCase.stale_at).is_not(None), col(RotationCase.ts).is_not(None))
        .order_by(col(RotationCase.stale_at))
        .limit(limit)
    ).all()
    return [case_id for case_id in ids if case_id is not None]


def mark_case_edited(session: Session, case: CaseView, now: datetime) -> None:
    """The checklist message shows `case`; a change recorded since keeps it marked."""
    if case.stale_at is None:
        return
    session.execute(
        sa.update(RotationCase)
        .where(col(RotationCase.id) == case.id, col(RotationCase.stale_at) == case.stale_at)
        .values(stale_at=None, edited_at=now)
    )


def open_cases(session: Session) -> list[CaseView]:
    """Every open checklist, oldest first."""
    ids = session.exec(
        select(RotationCase.id).where(RotationCase.status == "open").order_by(col(RotationCase.id))
    ).all()
    return [get_case(session, case_id) for case_id in ids if case_id is not None]


def get_case(session: Session, case_id: int) -> CaseView:
    """One case with its items, soonest-expiring token first."""
    row = session.exec(
        select(RotationCase, Person)
        .join(Person, col(Person.slack_id) == col(RotationCase.person_id))
        .where(RotationCase.id == case_id)
    ).first()
    if row is None:
        raise NotFound(f"There is no rotation case {case_id}.")
    case, person = row
    items = session.exec(
        select(RotationItem, Token, Server.name)
        .join(Token, col(Token.id) == col(RotationItem.token_id))
        .join(Server, col(Server.id) == col(Token.server_id))
        .where(RotationItem.case_id == case_id)
        .order_by(col(Token.expires_at), col(RotationItem.id))
    ).all()
    return CaseView(
        id=case_id,
        person_id=case.person_id,
        person_name=person.name,
        person_email=person.email,
        reason=case.reason,
        status=case.status,
        opened_at=case.opened_at,
        opened_by=case.opened_by,
        channel=case.channel,
        ts=case.ts,
        items=tuple(
            ItemView(
                item.id or 0,
                token.id or 0,
                server,
                token.expires_at,
                item.done_by,
                item.done_at,
                token.status != TokenStatus.ACTIVE,
                token.issued_at,
            )
            for item, token, server in items
        ),
        stale_at=case.stale_at,
    )


def case_for_token(session: Session, token_id: int) -> CaseView | None:
    """The open case listing this token, if any (the newest when several do)."""
    case_id = session.exec(
        select(RotationCase.id)
        .join(RotationItem, col(RotationItem.case_id) == col(RotationCase.id))
        .where(RotationItem.token_id == token_id, RotationCase.status == "open")
        .order_by(col(RotationCase.id).desc())
    ).first()
    return None if case_id is None else get_case(session, case_id)


def cases_to_repost(
    session: Session, now: datetime, every: timedelta = timedelta(days=1)
) -> list[CaseView]:
    """Open cases never posted, or last posted at least `every` ago."""
    ids = session.exec(
        select(RotationCase.id)
        .where(
            RotationCase.status == "open",
            sa.or_(
                col(RotationCase.last_posted_at).is_(None),
                col(RotationCase.last_posted_at) <= now - every,
            ),
        )
        .order_by(col(RotationCase.id))
    ).all()
    return [get_case(session, case_id) for case_id in ids if case_id is not None]


def downloaders_to_reconcile(session: Session) -> list[str]:
    """Slack user ids that downloaded an active token and are not known to have left."""
    rows = session.exec(
        select(Token.downloaded_by)
        .outerjoin(Person, col(Person.slack_id) == col(Token.downloaded_by))
        .where(Token.status == TokenStatus.ACTIVE, col(Person.deactivated_at).is_(None))
        .distinct()
    ).all()
    return sorted(user for user in rows if user[:1] in ("U", "W") and user.isalnum())


def _add_items(session: Session, case_id: int, token_ids: list[int]) -> None:
    for token_id in token_ids:
        session.add(RotationItem(case_id=case_id, token_id=token_id))
    session.flush()


def mark_cases_stale(session: Session, case_ids: set[int], now: datetime) -> None:
    """The posted checklists must be edited (at once from Slack, else at the next sweep)."""
    if case_ids:
        session.execute(
            sa.update(RotationCase).where(col(RotationCase.id).in_(case_ids)).values(stale_at=now)
        )


def _open_items(session: Session, token_ids: list[int]) -> list[RotationItem]:
    """The items of open checklists that list any of these tokens as still to renew."""
    if not token_ids:
        return []
    return list(
        session.exec(
            select(RotationItem)
            .join(RotationCase, col(RotationCase.id) == col(RotationItem.case_id))
            .where(
                col(RotationItem.token_id).in_(token_ids),
                col(RotationItem.done_at).is_(None),
                RotationCase.status == "open",
            )
        ).all()
    )


def open_cases_of(session: Session, token_ids: list[int]) -> set[int]:
    """The open checklists that list any of these tokens as still to renew."""
    return {item.case_id for item in _open_items(session, token_ids)}


def tick_rotations(
    session: Session, actor: Actor, token_ids: list[int], now: datetime
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Mark the open checklist items of replaced tokens done; close cases with nothing left."""
    items = _open_items(session, token_ids)
    for item in items:
        item.done_by, item.done_at = actor.user_id, now
        session.add(item)
    session.flush()
    mark_cases_stale(session, {i.case_id for i in items}, now)
    closed = []
    for case_id in {i.case_id for i in items}:
        open_left = session.exec(
            select(RotationItem.id).where(
                RotationItem.case_id == case_id, col(RotationItem.done_at).is_(None)
            )
        ).first()
        if open_left is None:
            case = session.get(RotationCase, case_id)
            assert case is not None
            case.status, case.closed_at = "done", now
            session.add(case)
            closed.append(case_id)
    return tuple(i.id for i in items if i.id), tuple(closed)
