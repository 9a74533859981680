"""Two `mdmbot serve --http` replicas on one PostgreSQL database, behind one fake Slack."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.slack.builders import modals
from core import db
from core.people import persons as people
from core.roles import Actor
from core.tokens import issuance, servers
from core.vault import Vault, key_from_setting
from tests import certs
from tests.conftest import postgres_schema
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_add import add_values
from tests.fakeslack import FakeSlack
from tests.processes import ServeProcess, bot_env
from tests.slack_harness import Bot

pytestmark = pytest.mark.postgres
LEASE_SECONDS = 2.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL schema: both replicas start on it and migrate it together."""
    with postgres_schema(migrate=False) as url:
        yield url


@pytest.fixture
def replicas(fake: FakeSlack, pg_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    """Two replicas with short leases and frequent sweeps."""
    env = bot_env(
        fake,
        tmp_path,
        pg_url,
        MDMBOT_ADMINS=ADMIN,
        MDMBOT_LEASE_SECONDS=str(LEASE_SECONDS),
        MDMBOT_SWEEP_MINUTES="0.02",
    )
    procs = [ServeProcess(env, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.terminate(signal.SIGKILL)


def _past_token(pg_url: str, name: str, issued: datetime) -> None:
    """A server whose active token was issued at `issued` (so it is due for an alert now)."""
    engine = db.make_engine(pg_url)
    vault = Vault(key_from_setting("k" * 40))
    with db.unit_of_work(engine) as session:
        actor = Actor(ADMIN, operator=True)
        made = servers.add_server(
            session,
            vault,
            actor,
            name=name,
            certificate=certs.self_signed_rsa().pem,
            release_devices=True,
            now=issued,
        )
        issuance.activate_token(session, actor, made.token_id, issued)
        people.ensure_person(session, ADMIN, issued)
    engine.dispose()


def assert_alerted_once(fake: FakeSlack, url: str, name: str) -> None:
    """Make a token due for an alert now; it is posted once, however many processes sweep."""
    _past_token(url, name, datetime.now(UTC) - timedelta(days=340))
    fake.wait_for(lambda: any(name in m.get("text", "") for m in fake.messages_in("C0ALERTS")), 20)
    time.sleep(3)
    alerts = [m for m in fake.messages_in("C0ALERTS") if name in m.get("text", "")]
    assert len(alerts) == 1


def test_replicas_add_once_alert_once_and_take_over_the_lease(
    fake: FakeSlack, pg_url: str, replicas: list[ServeProcess], tmp_path: Path
) -> None:
    # Two submissions adding the same name, each reaching another replica at once: one server.
    # (The very same signed submission twice would be a replay, handled once.)
    harnesses = [Bot.__new__(Bot) for _ in replicas]
    for index, (harness, proc) in enumerate(zip(harnesses, replicas, strict=True)):
        harness.fake, harness.url, harness._seq = fake, proc.url, index * 100
    values = add_values(fake, "District Jamf", certs.self_signed_rsa().pem)
    barrier, answers = threading.Barrier(2), []

    def submit(harness: Bot) -> None:
        barrier.wait()
        answers.append(harness.submit(ADMIN, {"callback_id": modals.ADD_SERVER}, values).json())

    threads = [threading.Thread(target=submit, args=(h,)) for h in harnesses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a["response_action"] for a in answers) == ["errors", "update"]
    assert "already exists" in json.dumps(answers)
    fake.wait_for(lambda: len(fake.uploads) == 1, 15)

    # Both replicas sweep every ~1 s; an alert due now is posted exactly once.
    assert_alerted_once(fake, pg_url, "Mosyle")

    # Killing the lease holder lets the other replica take over within two lease periods.
    roles = {proc.url: proc.metric("mdmbot_scheduler_leader") for proc in replicas}
    assert sorted(roles.values()) == [0.0, 1.0]
    leader = next(p for p in replicas if roles[p.url] == 1.0)
    standby = next(p for p in replicas if p is not leader)
    leader.terminate(signal.SIGKILL)
    killed = time.monotonic()
    while standby.metric("mdmbot_scheduler_leader") != 1.0:
        assert time.monotonic() - killed < 2 * LEASE_SECONDS, "no takeover in two lease periods"
        time.sleep(0.05)
