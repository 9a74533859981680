"""Roles over a real database: grant, revoke, list, who may grant, the last Administrator."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import db
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.models import AuditEvent, Person, RoleGrant
from core.people.persons import bootstrap_admins, grant_role, list_roles, revoke_role, role_of
from core.roles import Actor, Role
from tests.conftest import NOW
from tests.integration import OPERATOR, count

LATER = NOW + timedelta(hours=1)


def holders(session: Session) -> list[tuple[str, Role]]:
    """Who holds which role, as `roles list` shows it."""
    return [(h.slack_id, h.role) for h in list_roles(session)]


def test_grant_list_and_revoke(session: Session) -> None:
    grant_role(session, OPERATOR, "U0ADMIN", Role.ADMINISTRATOR, NOW)
    grant_role(session, OPERATOR, "U0SITE", Role.SITE_MANAGER, NOW)
    grant_role(session, OPERATOR, "W0DEM", Role.DEVICE_ENROLLMENT_MANAGER, NOW)

    assert holders(session) == [
        ("U0ADMIN", Role.ADMINISTRATOR),
        ("W0DEM", Role.DEVICE_ENROLLMENT_MANAGER),
        ("U0SITE", Role.SITE_MANAGER),
    ]
    [admin] = [h for h in list_roles(session) if h.slack_id == "U0ADMIN"]
    assert (admin.granted_by, admin.granted_at) == ("operator:alice", NOW)

    # A second grant replaces the role: one role per person.
    grant_role(session, Actor("U0ADMIN"), "U0SITE", Role.ADMINISTRATOR, LATER)
    assert role_of(session, "U0SITE") is Role.ADMINISTRATOR
    assert count(session, RoleGrant) == 3

    assert revoke_role(session, OPERATOR, "W0DEM", LATER) is Role.DEVICE_ENROLLMENT_MANAGER
    assert role_of(session, "W0DEM") is None
    assert holders(session) == [("U0ADMIN", Role.ADMINISTRATOR), ("U0SITE", Role.ADMINISTRATOR)]
    with pytest.raises(NotFound, match="W0DEM"):
        revoke_role(session, OPERATOR, "W0DEM", LATER)
    assert session.get(Person, "W0DEM") is not None  # the person is remembered

    actions = session.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all()
    assert actions == ["role.grant"] * 4 + ["role.revoke"]


@pytest.mark.parametrize("bad_id", ["", "alice", "C0CHANNEL", "U0 SPACE", "U" + "0" * 40])
def test_only_slack_user_ids_can_be_granted(session: Session, bad_id: str) -> None:
    with pytest.raises(InvalidInput, match="not a Slack user id"):
        grant_role(session, OPERATOR, bad_id, Role.ADMINISTRATOR, NOW)
    assert count(session, RoleGrant) == count(session, Person) == 0


def test_only_administrators_grant_and_revoke(session: Session) -> None:
    grant_role(session, OPERATOR, "U0ADMIN", Role.ADMINISTRATOR, NOW)
    grant_role(session, OPERATOR, "U0SITE", Role.SITE_MANAGER, NOW)
    grant_role(session, OPERATOR, "U0DEM", Role.DEVICE_ENROLLMENT_MANAGER, NOW)
    before = holders(session)

    for actor in (Actor("U0SITE"), Actor("U0DEM"), Actor("U0NOBODY")):
        with pytest.raises(PermissionDenied, match="Only an Administrator"):
            grant_role(session, actor, "U0NEW", Role.SITE_MANAGER, NOW)
        with pytest.raises(PermissionDenied, match="Only an Administrator"):
            grant_role(session, actor, actor.user_id, Role.ADMINISTRATOR, NOW)
        with pytest.raises(PermissionDenied, match="Only an Administrator"):
            revoke_role(session, actor, "U0ADMIN", NOW)
    assert holders(session) == before

    grant_role(session, Actor("U0ADMIN"), "U0NEW", Role.SITE_MANAGER, NOW)
    assert role_of(session, "U0NEW") is Role.SITE_MANAGER
    [grant] = session.exec(select(RoleGrant).where(RoleGrant.person_id == "U0NEW")).all()
    assert grant.granted_by == "U0ADMIN"


def test_the_last_administrator_cannot_be_revoked_or_demoted(session: Session) -> None:
    grant_role(session, OPERATOR, "U0ONE", Role.ADMINISTRATOR, NOW)

    for actor in (Actor("U0ONE"), OPERATOR):
        with pytest.raises(InvalidInput, match="can't revoke the last Administrator"):
            revoke_role(session, actor, "U0ONE", NOW)
        for lower in (Role.SITE_MANAGER, Role.DEVICE_ENROLLMENT_MANAGER):
            with pytest.raises(InvalidInput, match="can't change the role of the last Admin"):
                grant_role(session, actor, "U0ONE", lower, NOW)
    assert holders(session) == [("U0ONE", Role.ADMINISTRATOR)]
    grant_role(session, OPERATOR, "U0ONE", Role.ADMINISTRATOR, LATER)  # no change: allowed

    grant_role(session, Actor("U0ONE"), "U0TWO", Role.ADMINISTRATOR, NOW)
    assert revoke_role(session, Actor("U0TWO"), "U0ONE", NOW) is Role.ADMINISTRATOR
    with pytest.raises(InvalidInput, match="last Administrator"):
        revoke_role(session, OPERATOR, "U0TWO", NOW)
    grant_role(session, Actor("U0TWO"), "U0ONE", Role.ADMINISTRATOR, NOW)
    grant_role(session, OPERATOR, "U0TWO", Role.SITE_MANAGER, LATER)  # another Admin remains
    assert holders(session) == [("U0ONE", Role.ADMINISTRATOR), ("U0TWO", Role.SITE_MANAGER)]


def test_bootstrap_admins_is_idempotent(session: Session) -> None:
    grant_role(session, OPERATOR, "U0SITE", Role.SITE_MANAGER, NOW)

    assert bootstrap_admins(session, ["U0A", "U0SITE"], NOW) == ["U0A", "U0SITE"]
    assert bootstrap_admins(session, ["U0A", "U0SITE"], LATER) == []
    assert bootstrap_admins(session, ["U0A", "U0B"], LATER) == ["U0B"]

    assert holders(session) == [
        ("U0A", Role.ADMINISTRATOR),
        ("U0B", Role.ADMINISTRATOR),
        ("U0SITE", Role.ADMINISTRATOR),
    ]
    assert count(session, RoleGrant) == 3
    grants = session.exec(select(AuditEvent).where(AuditEvent.action == "role.grant")).all()
    assert len(grants) == 4  # U0SITE by hand, then U0A, U0SITE, U0B once each
    assert {g.actor for g in grants[1:]} == {"operator:MDMBOT_ADMINS"}


def test_replicas_starting_together_grant_admins_once(engine: sa.Engine) -> None:
    import threading

    barrier, granted, errors = threading.Barrier(6), [], []

    def start() -> None:
        barrier.wait()
        try:
            with db.unit_of_work(engine) as s:
                granted.extend(bootstrap_admins(s, ["U0BOOT1", "U0BOOT2"], NOW))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(granted) == ["U0BOOT1", "U0BOOT2"]
    with db.unit_of_work(engine) as s:
        assert {h.slack_id for h in list_roles(s)} == {"U0BOOT1", "U0BOOT2"}
