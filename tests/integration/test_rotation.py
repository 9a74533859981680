"""Rotation cases after a departure or a password change (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import db
from core.dep.feedback import record_use
from core.devices.unlink import remove_server
from core.errors import InvalidInput, PermissionDenied
from core.models import AuditEvent, Person, RotationCase, Token
from core.people.persons import grant_role
from core.people.rotation import (
    cancel_for_reactivation,
    case_for_token,
    cases_to_repost,
    claim_post,
    downloaders_to_reconcile,
    get_case,
    open_case,
    record_case_message,
    record_departure,
    release_post,
)
from core.roles import Actor, Role
from core.tokens.issuance import activate_token, issue_token
from core.tokens.servers import add_server, find_server
from core.vault import Vault
from tests import certs
from tests.conftest import NOW

ROOT = Actor("root", operator=True)
ADMIN = Actor("U0ADMIN")
ALICE, BOB = "U0ALICE", "U0BOB"


def link(session: Session, vault: Vault, name: str, who: str, when: datetime = NOW) -> int:
    """Link server `name` with an active token downloaded by `who`; return the token id."""
    actor = Actor(who, operator=not who.startswith(("U", "W")))
    if not actor.operator:
        grant_role(session, ROOT, who, Role.DEVICE_ENROLLMENT_MANAGER, when)
    issued = add_server(session, vault, actor, name=name, certificate=certs.self_signed_rsa().pem,
                        release_devices=True, now=when)
    activate_token(session, actor, issued.token_id, when)
    return issued.token_id


def rotate(session: Session, vault: Vault, who: str, name: str, when: datetime) -> int:
    """Replace server `name`'s token, as `who` pressing "Rotate"."""
    new = issue_token(session, vault, Actor(who), find_server(session, name), when)
    activate_token(session, Actor(who), new.token_id, when)
    return new.token_id


@pytest.fixture
def tokens(engine: sa.Engine, vault: Vault) -> dict[str, int]:
    """Alice downloaded two servers' tokens, Bob one; ADMIN holds Administrator."""
    with db.unit_of_work(engine) as s:
        grant_role(s, ROOT, ADMIN.user_id, Role.ADMINISTRATOR, NOW)
        made = {"Jamf": link(s, vault, "Jamf", ALICE), "Fleet": link(s, vault, "Fleet", ALICE),
                "Mosyle": link(s, vault, "Mosyle", BOB)}
        old = issue_token(s, vault, Actor(ALICE), find_server(s, "Mosyle"), NOW)  # never activated
        made["pending"] = old.token_id
        return made


def test_departure_lists_only_active_tokens_and_is_idempotent(
    engine: sa.Engine, tokens: dict[str, int]
) -> None:
    later = NOW + timedelta(days=3)
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE, later, name="Alice Liddell", email="alice@example.edu")
        assert case is not None
        again = record_departure(s, ALICE, later + timedelta(seconds=5))
        also = open_case(s, ADMIN, ALICE, "departure", later)
        pw = open_case(s, Actor(ALICE), ALICE, "password_change", later)
    assert again == case and also == case and pw == case
    assert (case.person_name, case.person_email, case.reason, case.status) == (
        "Alice Liddell", "alice@example.edu", "departure", "open")
    assert case.opened_by == "operator:mdmbot" and case.opened_at == later
    assert sorted(i.token_id for i in case.items) == sorted([tokens["Jamf"], tokens["Fleet"]])
    assert {i.server_name for i in case.items} == {"Jamf", "Fleet"}
    assert not any(i.replaced or i.done_at for i in case.items)
    with db.unit_of_work(engine) as s:
        assert s.exec(select(sa.func.count()).select_from(RotationCase)).one() == 1
        person = s.get(Person, ALICE)
        assert person is not None and person.deactivated_at == later
        actions = s.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all()
    assert "person.deactivate" in actions and actions.count("rotation.open") == 1


def install(session: Session, token_id: int, when: datetime) -> tuple[int, ...]:
    """The MDM server's first successful /session with this token."""
    token = session.get(Token, token_id)
    assert token is not None
    return record_use(session, token, when, "10.0.0.5", "nanodep-g-o-dep/0")


def test_an_item_is_done_once_the_replacement_is_installed(
    engine: sa.Engine, vault: Vault, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        case = open_case(s, ADMIN, ALICE, "departure", NOW)
        assert case is not None
    when, seen = NOW + timedelta(hours=2), NOW + timedelta(hours=3)
    with db.unit_of_work(engine) as s:
        new_jamf = rotate(s, vault, BOB, "Jamf", when)
        [waiting] = [i for i in get_case(s, case.id).items if i.token_id == tokens["Jamf"]]
        assert (waiting.done_by, waiting.done_at, waiting.replaced) == (None, None, True)
        assert install(s, new_jamf, seen) == (case.id,)
        assert install(s, new_jamf, seen + timedelta(minutes=1)) == (), "only the first use"
        view = get_case(s, case.id)
        assert view.status == "open"
        [done] = [i for i in view.items if i.token_id == tokens["Jamf"]]
        assert (done.done_by, done.done_at, done.replaced) == (BOB, seen, True)
        assert [i.server_name for i in view.left] == ["Fleet"]
        assert case_for_token(s, tokens["Fleet"]) == view
    with db.unit_of_work(engine) as s:
        install(s, rotate(s, vault, ADMIN.user_id, "Fleet", when), seen)
        assert get_case(s, case.id).status == "done"
        assert case_for_token(s, tokens["Fleet"]) is None


def test_password_change_by_the_person_themself(
    engine: sa.Engine, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        case = open_case(s, Actor(BOB), BOB, "password_change", NOW)
        assert case is not None and case.reason == "password_change"
        assert [i.token_id for i in case.items] == [tokens["Mosyle"]]
        assert open_case(s, Actor(BOB), BOB, "password_change", NOW) == case
        person = s.get(Person, BOB)
        assert person is not None and person.deactivated_at is None


def test_authorisation(engine: sa.Engine, tokens: dict[str, int]) -> None:
    with db.unit_of_work(engine) as s:
        with pytest.raises(PermissionDenied):
            open_case(s, Actor("U0NOBODY"), ALICE, "departure", NOW)
        with pytest.raises(PermissionDenied):
            open_case(s, Actor("U0NOBODY"), ALICE, "password_change", NOW)
        with pytest.raises(InvalidInput):
            open_case(s, ADMIN, ALICE, "holiday", NOW)
        assert open_case(s, Actor("U0NOBODY"), "U0NOBODY", "password_change", NOW) is None
        assert open_case(s, Actor(BOB), ALICE, "departure", NOW) is not None  # BOB has a role


def test_no_active_tokens_gives_no_case_but_records_departure(
    engine: sa.Engine, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        assert record_departure(s, "U0CAROL", NOW, name="Carol") is None
        person = s.get(Person, "U0CAROL")
        assert person is not None and (person.name, person.deactivated_at) == ("Carol", NOW)


def test_removed_server_ticks_its_item_and_can_close_the_case(
    engine: sa.Engine, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE, NOW)
        assert case is not None
        remove_server(s, ADMIN, "Fleet", NOW)
        view = get_case(s, case.id)
        assert {i.server_name: i.replaced for i in view.items} == {"Jamf": False, "Fleet": True}
        assert [i.server_name for i in view.left] == ["Jamf"]
        assert view.status == "open"
        remove_server(s, ADMIN, "Jamf", NOW)
        assert get_case(s, case.id).status == "done"


def test_reactivation_cancels_open_departure_case(
    engine: sa.Engine, vault: Vault, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE, NOW)
        pw = open_case(s, Actor(BOB), BOB, "password_change", NOW)
        assert case is not None and pw is not None
        install(s, rotate(s, vault, ADMIN.user_id, "Jamf", NOW), NOW)
    with db.unit_of_work(engine) as s:
        assert cancel_for_reactivation(s, ALICE, NOW + timedelta(days=1)) == [case.id]
        assert cancel_for_reactivation(s, BOB, NOW) == []
        assert cancel_for_reactivation(s, "U0UNKNOWN", NOW) == []
    with db.unit_of_work(engine) as s:
        view = get_case(s, case.id)
        assert view.status == "cancelled" and len(view.items) == 2
        assert [i.done_by for i in view.items if i.done_at] == [ADMIN.user_id]
        person = s.get(Person, ALICE)
        assert person is not None and person.deactivated_at is None
        assert get_case(s, pw.id).status == "open"
        # Leaving again opens a fresh case for what is still active.
        again = record_departure(s, ALICE, NOW + timedelta(days=2))
        assert again is not None and again.id != case.id
        assert [i.server_name for i in again.items] == ["Fleet"]


def test_case_messages_and_daily_repost(engine: sa.Engine, tokens: dict[str, int]) -> None:
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE, NOW)
        assert case is not None
        assert [c.id for c in cases_to_repost(s, NOW)] == [case.id]  # never posted
        record_case_message(s, case.id, "C0ALERTS", "1700000000.000100", NOW)
        assert cases_to_repost(s, NOW + timedelta(hours=23)) == []
        [due] = cases_to_repost(s, NOW + timedelta(days=1))
        assert (due.channel, due.ts) == ("C0ALERTS", "1700000000.000100")
        assert cases_to_repost(s, NOW + timedelta(hours=2), every=timedelta(hours=1)) == [due]


def test_reconcile_lists_downloaders_not_known_to_have_left(
    engine: sa.Engine, vault: Vault, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        link(s, vault, "Scripted", "cli-operator")  # not a Slack user id
        link(s, vault, "Workspace", "W0GRID")
        assert downloaders_to_reconcile(s) == [ALICE, BOB, "W0GRID"]
        record_departure(s, BOB, NOW)
        assert downloaders_to_reconcile(s) == [ALICE, "W0GRID"]
        rotate(s, vault, "W0GRID", "Mosyle", NOW)  # W0GRID now downloaded two tokens
        s.exec(sa.update(Token).where(col(Token.downloaded_by) == ALICE)
               .values(status="revoked"))
        assert downloaders_to_reconcile(s) == ["W0GRID"]


@pytest.mark.parametrize("reason", ["departure", "password_change"])
def test_concurrent_reports_open_one_case(
    engine: sa.Engine, tokens: dict[str, int], reason: str
) -> None:
    import threading

    barrier, cases, errors = threading.Barrier(8), [], []

    def depart() -> None:
        barrier.wait()
        try:
            with db.unit_of_work(engine) as s:
                case = open_case(s, Actor(ALICE), ALICE, reason, NOW)
                cases.append(case.id if case else None)
        except Exception as exc:  # the test reports any failure below
            errors.append(exc)

    threads = [threading.Thread(target=depart) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(set(cases)) == 1 and None not in cases
    with db.unit_of_work(engine) as s:
        open_cases = s.exec(select(RotationCase).where(RotationCase.status == "open")).all()
    assert len(open_cases) == 1


def test_a_checklist_post_is_claimed_by_one_of_several_sweeps(
    engine: sa.Engine, tokens: dict[str, int]
) -> None:
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE, NOW)
        assert case is not None
    day = timedelta(days=1)

    def claim(when: datetime, every: timedelta | None) -> list[bool]:
        barrier = threading.Barrier(4)

        def one(_: int) -> bool:
            barrier.wait(timeout=30)
            with db.unit_of_work(engine) as s:
                assert case is not None
                return claim_post(s, case.id, when, every)

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, range(4)))

    assert sorted(claim(NOW, None)) == [False, False, False, True], "the first post, once"
    assert claim(NOW + timedelta(hours=23), day) == [False] * 4, "posted less than a day ago"
    assert sorted(claim(NOW + day, day)) == [False, False, False, True], "the daily repost, once"
    with db.unit_of_work(engine) as s:
        release_post(s, case.id)  # Slack refused that post: the next sweep tries again
        assert [c.id for c in cases_to_repost(s, NOW + day)] == [case.id]
