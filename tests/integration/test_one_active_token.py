"""One active token per server, whatever races: parallel rotations, stale confirmations."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlmodel import select

from core.db import unit_of_work
from core.devices import unlink
from core.errors import InvalidInput, TokenConflict
from core.models import Token, TokenStatus
from core.tokens import issuance, servers
from core.tokens.issuance import Activation
from core.vault import Vault
from tests.conftest import NOW
from tests.integration import OPERATOR, rsa_cert

ROUNDS = 4
CONTENDERS = 4


def _linked(engine: sa.Engine, vault: Vault) -> int:
    """A server with an active token; its id."""
    with unit_of_work(engine) as session:
        issued = servers.add_server(
            session,
            vault,
            OPERATOR,
            name="Jamf Pro",
            certificate=rsa_cert().pem,
            release_devices=True,
            now=NOW,
        )
        issuance.activate_token(session, OPERATOR, issued.token_id, NOW)
        return issued.server_id


def _statuses(engine: sa.Engine) -> list[str]:
    with unit_of_work(engine, readonly=True) as session:
        return list(session.exec(select(Token.status).order_by(Token.id)).all())


def _run_together(count: int, work: object) -> list[object]:
    barrier = threading.Barrier(count)

    def contend(index: int) -> object:
        barrier.wait(timeout=30)
        try:
            return work(index)  # type: ignore[operator]
        except Exception as exc:  # every outcome is inspected by the test
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(contend, range(count)))


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_parallel_token_issues_leave_exactly_one_active_token(
    engine: sa.Engine, vault: Vault, round_: int
) -> None:
    server_id = _linked(engine, vault)
    prepared = threading.Barrier(CONTENDERS)

    def rotate(index: int) -> Activation:
        with unit_of_work(engine) as session:
            server = servers.find_server_by_id(session, server_id)
            issued = issuance.issue_token(session, vault, OPERATOR, server, NOW)
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                prepared.wait(timeout=30)  # all saw the same active token (SQLite: one writer)
            return issuance.activate_token(session, OPERATOR, issued.token_id, NOW)

    outcomes = _run_together(CONTENDERS, rotate)
    assert all(isinstance(o, Activation | TokenConflict) for o in outcomes), outcomes
    assert _statuses(engine).count("active") == 1
    winners = [o for o in outcomes if isinstance(o, Activation)]
    assert winners, outcomes
    superseded = [t for o in winners for t in o.superseded]
    assert len(superseded) == len(set(superseded)) == len(winners), "each win replaced one token"


def test_only_one_of_parallel_deliveries_starts_and_the_others_are_discarded(
    engine: sa.Engine, vault: Vault
) -> None:
    server_id = _linked(engine, vault)
    prepared = []
    for _ in range(CONTENDERS):
        with unit_of_work(engine) as session:
            server = servers.find_server_by_id(session, server_id)
            prepared.append(issuance.issue_token(session, vault, OPERATOR, server, NOW).token_id)

    def start(index: int) -> str | None:
        with unit_of_work(engine) as session:
            return issuance.start_delivery(
                session, OPERATOR, prepared[index], f"slack:D{index}", NOW
            )

    refusals = _run_together(CONTENDERS, start)
    assert refusals.count(None) == 1
    assert all("Someone else just replaced the token" in str(r) for r in refusals if r)
    with unit_of_work(engine, readonly=True) as session:
        rows = {t.id: (t.status, t.reason) for t in session.exec(select(Token)).all()}
    started = prepared[refusals.index(None)]
    assert rows[started] == (TokenStatus.DELIVERING, None)
    assert {rows[t] for t in prepared if t != started} == {
        ("revoked", "someone else replaced the token first")
    }
    with unit_of_work(engine) as session:
        issuance.activate_token(session, OPERATOR, started, NOW)
    assert _statuses(engine).count("active") == 1


def test_a_confirmation_for_a_token_already_replaced_is_refused(
    engine: sa.Engine, vault: Vault
) -> None:
    server_id = _linked(engine, vault)
    with unit_of_work(engine) as session:
        server = servers.find_server_by_id(session, server_id)
        seen = issuance.active_token_id(session, server_id)
        newer = issuance.issue_token(session, vault, OPERATOR, server, NOW)
        issuance.activate_token(session, OPERATOR, newer.token_id, NOW)
    with unit_of_work(engine) as session, pytest.raises(TokenConflict, match="Someone else"):
        server = servers.find_server_by_id(session, server_id)
        issuance.issue_token(session, vault, OPERATOR, server, NOW, expected=seen)
    assert _statuses(engine) == ["superseded", "active"]


def test_the_database_refuses_a_second_active_token(engine: sa.Engine, vault: Vault) -> None:
    server_id = _linked(engine, vault)
    with unit_of_work(engine) as session:
        server = servers.find_server_by_id(session, server_id)
        pending = issuance.issue_token(session, vault, OPERATOR, server, NOW)
    with pytest.raises(sa.exc.IntegrityError), unit_of_work(engine) as session:
        session.exec(sa.update(Token).where(Token.id == pending.token_id).values(status="active"))


def test_removing_a_server_revokes_a_token_being_delivered(engine: sa.Engine, vault: Vault) -> None:
    server_id = _linked(engine, vault)
    with unit_of_work(engine) as session:
        server = servers.find_server_by_id(session, server_id)
        issued = issuance.issue_token(session, vault, OPERATOR, server, NOW)
        assert issuance.start_delivery(session, OPERATOR, issued.token_id, "slack:D1", NOW) is None
    with unit_of_work(engine) as session:
        unlink.remove_server(session, OPERATOR, "Jamf Pro", NOW)
    assert _statuses(engine) == ["revoked", "revoked"]
    with pytest.raises(InvalidInput), unit_of_work(engine) as session:
        issuance.activate_token(session, OPERATOR, issued.token_id, NOW)


def test_a_delivery_cut_off_earlier_is_named_not_blamed_on_someone_else(
    engine: sa.Engine, vault: Vault
) -> None:
    server_id = _linked(engine, vault)
    with unit_of_work(engine) as session:
        server = servers.find_server_by_id(session, server_id)
        cut = issuance.issue_token(session, vault, OPERATOR, server, NOW)
        assert issuance.start_delivery(session, OPERATOR, cut.token_id, "slack:D1", NOW) is None
    later = NOW + issuance.DELIVERY_GRACE
    with unit_of_work(engine) as session:
        server = servers.find_server_by_id(session, server_id)
        issued = issuance.issue_token(session, vault, OPERATOR, server, later)
        refusal = issuance.start_delivery(session, OPERATOR, issued.token_id, "slack:D2", later)
    assert refusal is not None and "cut off while being delivered" in refusal
    assert _statuses(engine) == ["active", "delivering", "revoked"]
