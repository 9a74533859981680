"""People and their roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit
from core.db import connection_of
from core.errors import InvalidInput, NotFound
from core.models import Person, RoleGrant
from core.roles import Actor, Permission, Role, require


@dataclass(frozen=True)
class RoleHolder:
    """A person and the role they hold."""

    slack_id: str
    name: str | None
    role: Role
    granted_by: str
    granted_at: datetime


def ensure_person(
    session: Session,
    slack_id: str,
    now: datetime,
    *,
    name: str | None = None,
    email: str | None = None,
) -> Person:
    """The person with this Slack id, created or with a missing name/email filled in."""
    person = session.get(Person, slack_id)
    if person is None:
        person = Person(slack_id=slack_id, name=name, email=email, first_seen_at=now)
        session.add(person)
        session.flush()
        return person
    if name and not person.name:
        person.name = name
    if email and not person.email:
        person.email = email
    return person


def is_recorded(session: Session, slack_id: str) -> bool:
    """Whether the person is known with their email (nothing left to capture)."""
    person = session.get(Person, slack_id)
    return person is not None and bool(person.email)


def role_of(db: Session | sa.Connection, slack_id: str) -> Role | None:
    """The role a Slack user holds, if any."""
    role = connection_of(db).execute(_ROLE_OF, {"person": slack_id}).scalar()
    return Role(role) if role else None


_ROLE_OF = sa.select(col(RoleGrant.role)).where(col(RoleGrant.person_id) == sa.bindparam("person"))


def authorize(db: Session | sa.Connection, actor: Actor, permission: Permission) -> None:
    """Raise PermissionDenied unless the actor may do `permission`."""
    if actor.api:  # an API account acts with the Administrator role (issue 32)
        require(actor, Role.ADMINISTRATOR, permission)
        return
    require(actor, None if actor.operator else role_of(db, actor.user_id), permission)


def grant_role(
    session: Session, actor: Actor, slack_id: str, role: Role, now: datetime
) -> str | None:
    """Give a person a role (replacing the one they had); return the role they had."""
    authorize(session, actor, Permission.MANAGE_ROLES)
    check_user_id(slack_id)
    ensure_person(session, slack_id, now)
    grant = session.exec(select(RoleGrant).where(RoleGrant.person_id == slack_id)).first()
    previous = grant.role if grant else None
    if grant is not None and role != Role.ADMINISTRATOR:
        _keep_an_administrator(session, grant, "change the role of")
    if grant is None:
        grant = RoleGrant(person_id=slack_id, role=role, granted_by=actor.label, granted_at=now)
    else:
        grant.role, grant.granted_by, grant.granted_at = role, actor.label, now
    session.add(grant)
    audit.record(session, actor, "role.grant", slack_id, now, role=role.value, previous=previous)
    return previous


def revoke_role(session: Session, actor: Actor, slack_id: str, now: datetime) -> Role:
    """Take away a person's role; the last Administrator keeps theirs."""
    authorize(session, actor, Permission.MANAGE_ROLES)
    grant = session.exec(select(RoleGrant).where(RoleGrant.person_id == slack_id)).first()
    if grant is None:
        raise NotFound(f"<@{slack_id}> has no mdmbot role.")
    _keep_an_administrator(session, grant, "revoke")
    role = Role(grant.role)
    session.delete(grant)
    audit.record(session, actor, "role.revoke", slack_id, now, role=role.value)
    return role


def _keep_an_administrator(session: Session, grant: RoleGrant, verb: str) -> None:
    """Refuse to take Administrator from the last person holding it (nobody could grant again)."""
    if grant.role != Role.ADMINISTRATOR:
        return
    admins = session.exec(
        select(RoleGrant.person_id)
        .where(RoleGrant.role == Role.ADMINISTRATOR.value)
        .with_for_update()
    ).all()
    if len(admins) <= 1:
        raise InvalidInput(
            f"You can't {verb} the last Administrator; grant Administrator to someone else first."
        )


def list_roles(session: Session) -> list[RoleHolder]:
    """Everyone holding a role, by role then id."""
    rows = session.exec(
        select(RoleGrant, Person)
        .join(Person, col(Person.slack_id) == col(RoleGrant.person_id))
        .order_by(col(RoleGrant.role), col(RoleGrant.person_id))
    ).all()
    return [
        RoleHolder(p.slack_id, p.name, Role(g.role), g.granted_by, g.granted_at) for g, p in rows
    ]


def administrators(session: Session) -> list[RoleHolder]:
    """The Administrators someone can still ask for a role (not those who left)."""
    rows = session.exec(
        select(RoleGrant, Person)
        .join(Person, col(Person.slack_id) == col(RoleGrant.person_id))
        .where(RoleGrant.role == Role.ADMINISTRATOR, col(Person.deactivated_at).is_(None))
        .order_by(col(RoleGrant.person_id))
    ).all()
    return [
        RoleHolder(p.slack_id, p.name, Role(g.role), g.granted_by, g.granted_at) for g, p in rows
    ]


class _AlreadyGranted(Exception):
    """Rolls back a bootstrap grant that found another replica's grant in place."""


def bootstrap_admins(session: Session, slack_ids: list[str], now: datetime) -> list[str]:
    """Grant Administrator to each configured id lacking it (replicas may race); return those."""
    granted = []
    for slack_id in slack_ids:
        try:
            with session.begin_nested():
                if role_of(session, slack_id) is Role.ADMINISTRATOR:
                    continue
                previous = grant_role(
                    session,
                    Actor("MDMBOT_ADMINS", operator=True),
                    slack_id,
                    Role.ADMINISTRATOR,
                    now,
                )
                session.flush()
                if previous == Role.ADMINISTRATOR:  # another replica's grant committed meanwhile
                    raise _AlreadyGranted
        except (sa.exc.IntegrityError, _AlreadyGranted):
            continue
        granted.append(slack_id)
    return granted


def check_user_id(slack_id: str) -> None:
    """Refuse anything that does not look like a Slack user id."""
    if not slack_id or slack_id[0] not in "UW" or not slack_id.isalnum() or len(slack_id) > 32:
        raise InvalidInput(f"“{slack_id}” is not a Slack user id (they look like U012ABCDEF).")
