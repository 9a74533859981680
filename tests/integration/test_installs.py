"""Installs through a connection: claimed once across replicas, retried with backoff, replaced."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from sqlmodel import Session

from bot.mdm.installer import MdmInstaller
from core.connections import installs, links
from core.connections.installs import InstallOutcome
from core.connections.links import ConnectionSpec, Installed, TokenPush
from core.db import unit_of_work
from core.models import MdmConnection, TokenInstall
from core.settings import parse_networks
from core.tokens import issuance, servers
from core.vault import Vault
from tests.conftest import NOW
from tests.fakemdm import ALLOW_LOOPBACK, FakeNanoDep
from tests.fakemdm import NANODEP_KEY as KEY
from tests.fakemdm import installer as mdm_installer
from tests.integration import OPERATOR


class SlowInstaller(MdmInstaller):
    """The real installer, holding each push until released (to make replicas overlap)."""

    def __init__(self, gate: threading.Event, timeout: float = 5) -> None:
        super().__init__(timeout=timeout, allow_networks=parse_networks(ALLOW_LOOPBACK))
        object.__setattr__(self, "gate", gate)

    def install(self, spec: ConnectionSpec, push: TokenPush) -> Installed:
        """Wait for the gate, then push."""
        self.gate.wait(10)  # type: ignore[attr-defined]
        return super().install(spec, push)


def _link(engine: sa.Engine, vault: Vault, fake: FakeNanoDep, name: str = "school1") -> int:
    spec = links.make_spec("nanodep", url=fake.url, dep_name=name, api_key=KEY)
    pem = mdm_installer().fetch_certificate(spec, name)
    with unit_of_work(engine) as session:
        issued = servers.add_server(
            session, vault, OPERATOR, name=name, certificate=pem, release_devices=True, now=NOW
        )
        server = servers.find_server(session, name)
        links.save_connection(session, vault, OPERATOR, server, spec, NOW)
        installs.issue_through(session, OPERATOR, issued.token_id, spec, NOW)
        install_id = installs.install_id_of(session, issued.token_id)
    assert install_id is not None
    return install_id


def _uow(engine: sa.Engine) -> AbstractContextManager[Session]:
    return unit_of_work(engine)


def _renew(engine: sa.Engine, vault: Vault, name: str, when: datetime) -> int:
    with unit_of_work(engine) as session:
        server = servers.find_server(session, name)
        issued = issuance.issue_token(session, vault, OPERATOR, server, when)
        spec = links.connection_of(session, vault, server.id)
        assert spec is not None
        installs.issue_through(session, OPERATOR, issued.token_id, spec, when)
        install_id = installs.install_id_of(session, issued.token_id)
    assert install_id is not None
    return install_id


def test_two_replicas_retrying_one_install_push_it_once(
    engine: sa.Engine, vault: Vault, nanodep: FakeNanoDep
) -> None:
    install_id = _link(engine, vault, nanodep)
    gate = threading.Event()
    installer = SlowInstaller(gate)
    barrier = threading.Barrier(2)

    def replica(holder: str) -> InstallOutcome | None:
        barrier.wait(10)
        outcome = installs.attempt(
            partial(_uow, engine), vault, installer, install_id, holder, lambda: NOW
        )
        gate.set()
        return outcome

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(replica, ["replica-a", "replica-b"]))
    assert sorted(o is None for o in outcomes) == [False, True], outcomes
    [done] = [o for o in outcomes if o is not None]
    assert done.installed and done.label == "NanoDEP (school1)"
    assert [c.method for c in nanodep.calls].count("PUT") == 1, "pushed once"
    with unit_of_work(engine) as session:
        row = session.get(TokenInstall, install_id)
        assert row is not None and (row.status, row.attempts) == ("installed", 1)


def test_the_claim_outlasts_the_hard_deadline_of_a_slow_push(
    engine: sa.Engine, vault: Vault, nanodep: FakeNanoDep
) -> None:
    install_id = _link(engine, vault, nanodep)
    gate = threading.Event()
    installer = SlowInstaller(gate, timeout=600)  # an operator's generous MDMBOT_MDM_TIMEOUT
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            installs.attempt, partial(_uow, engine), vault, installer, install_id, "a", lambda: NOW
        )
        for _ in range(200):
            with unit_of_work(engine) as session:
                row = session.get(TokenInstall, install_id)
                if row is not None and row.claimed_by == "a":
                    break
            time.sleep(0.05)
        for minutes in (6, 15):  # past the old 5-minute claim, inside the 10-minute deadline
            later = NOW + timedelta(minutes=minutes)
            second = installs.attempt(
                partial(_uow, engine), vault, installer, install_id, "b", lambda w=later: w
            )
            assert second is None, "a push still within its deadline is not pushed again"
        gate.set()
        assert first.result(10) is not None and first.result().installed
    assert [c.method for c in nanodep.calls].count("PUT") == 1


def test_failures_back_off_and_a_newer_token_replaces_a_pending_install(
    engine: sa.Engine, vault: Vault, nanodep: FakeNanoDep
) -> None:
    first = _link(engine, vault, nanodep)
    nanodep.stop()
    uow, installer = partial(_uow, engine), mdm_installer(timeout=2)
    moments = [NOW, NOW + timedelta(minutes=5), NOW + timedelta(minutes=15)]
    for attempts, when in enumerate(moments, start=1):
        with unit_of_work(engine) as session:
            assert installs.due_installs(session, when) == [first]
            assert installs.due_installs(session, when - timedelta(seconds=1)) == []
        outcome = installs.attempt(uow, vault, installer, first, "sweep", lambda w=when: w)
        assert outcome is not None and not outcome.installed and outcome.attempts == attempts
        assert outcome.error and outcome.error.startswith("Cannot reach NanoDEP (school1)")
    with unit_of_work(engine) as session:
        row = session.get(TokenInstall, first)
        assert row is not None and row.next_attempt_at == moments[-1] + timedelta(minutes=20)
        conn = session.exec(sa.select(MdmConnection)).scalar_one()
        assert conn.last_install_error is not None
        assert conn.last_install_error.startswith("install failed 3 times: Cannot reach")

    second = _renew(engine, vault, "school1", NOW + timedelta(minutes=16))
    with unit_of_work(engine) as session:
        replaced = session.get(TokenInstall, first)
        assert replaced is not None and replaced.status == "replaced"
        assert installs.due_installs(session, NOW + timedelta(days=1)) == [second]
    assert installs.attempt(uow, vault, installer, first, "sweep", lambda: NOW) is None
    assert installs.backoff(1) == timedelta(minutes=5)
    assert installs.backoff(30) == timedelta(hours=6)


def test_a_push_goes_only_to_the_tokens_own_server(
    engine: sa.Engine, vault: Vault, nanodep: FakeNanoDep
) -> None:
    one = _link(engine, vault, nanodep, "school1")
    two = _link(engine, vault, nanodep, "school2")
    uow, installer = partial(_uow, engine), mdm_installer(timeout=5)
    for install_id in (one, two):
        outcome = installs.attempt(uow, vault, installer, install_id, "sweep", lambda: NOW)
        assert outcome is not None and outcome.installed
    paths = [c.path for c in nanodep.calls if c.method == "PUT"]
    assert paths == ["/v1/tokenpki/school1", "/v1/tokenpki/school2"]
    assert nanodep.tokens["school1"]["consumer_key"] != nanodep.tokens["school2"]["consumer_key"]
