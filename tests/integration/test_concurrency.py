"""Twenty people add the same server at once, each in their own connection: one wins."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from sqlmodel import select

from core.db import unit_of_work
from core.errors import DuplicateName
from core.models import AuditEvent, Certificate, Server, Token
from core.tokens import servers
from core.tokens.issuance import IssuedToken
from core.vault import Vault
from tests.conftest import NOW
from tests.integration import OPERATOR, row_counts, rsa_cert, wide

CONTENDERS = 20


def test_twenty_concurrent_adds_of_one_name_yield_one_server(
    engine: sa.Engine, vault: Vault
) -> None:
    certificate = rsa_cert().pem
    spellings = ["Jamf Pro", "jamf pro", "JAMF  PRO", wide("JAMF Pro")]
    barrier = threading.Barrier(CONTENDERS)

    def contend(index: int) -> IssuedToken | BaseException:
        barrier.wait(timeout=30)
        try:
            with unit_of_work(engine) as session:
                return servers.add_server(
                    session,
                    vault,
                    OPERATOR,
                    name=spellings[index % len(spellings)],
                    certificate=certificate,
                    release_devices=True,
                    now=NOW,
                )
        except BaseException as exc:  # every outcome is inspected below
            return exc

    with ThreadPoolExecutor(max_workers=CONTENDERS) as pool:
        outcomes = list(pool.map(contend, range(CONTENDERS)))

    winners = [o for o in outcomes if isinstance(o, IssuedToken)]
    losers = [o for o in outcomes if not isinstance(o, IssuedToken)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, DuplicateName) for o in losers), [repr(o) for o in losers]
    assert len(losers) == CONTENDERS - 1
    for loser in losers:
        assert isinstance(loser, DuplicateName)
        assert "already exists" in loser.message

    counts = row_counts(engine)
    assert (counts["server"], counts["certificate"], counts["token"]) == (1, 1, 1)
    assert counts["auditevent"] == 1
    with unit_of_work(engine) as session:
        [server] = session.exec(select(Server)).all()
        assert server.id == winners[0].server_id
        assert server.name == winners[0].server_name
        assert session.exec(select(Certificate.server_id)).all() == [server.id]
        assert session.exec(select(Token.server_id)).all() == [server.id]
        assert session.exec(select(AuditEvent.action)).all() == ["server.add"]
