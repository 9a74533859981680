"""Two `mdmbot serve --http --dep-port` replicas on one PostgreSQL schema, real OAuth clients."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.context import utc_now
from core import db
from core.roles import Actor
from core.tokens import issuance, servers
from core.vault import Vault, key_from_setting
from tests import certs
from tests.conftest import postgres_schema
from tests.dep_client import Creds, call, oauth_header, open_token, session_key
from tests.e2e.conftest import ADMIN
from tests.fakeslack import FakeSlack
from tests.processes import ServeProcess, bot_env, free_port

pytestmark = pytest.mark.postgres


class DepReplica(ServeProcess):
    """A replica that also serves the device assignment service."""

    def __init__(self, env: dict[str, str], log_path: Path, *extra: str) -> None:
        self.dep_port = free_port()
        self.dep_url = f"http://127.0.0.1:{self.dep_port}"
        super().__init__(
            env,
            log_path,
            "--no-scheduler",
            "--dep-host",
            "127.0.0.1",
            "--dep-port",
            str(self.dep_port),
            *extra,
        )


@pytest.fixture
def replicas(fake: FakeSlack, tmp_path: Path) -> Iterator[tuple[str, list[DepReplica]]]:
    """Two replicas started together on an empty PostgreSQL schema."""
    with postgres_schema(migrate=False) as url:
        env = bot_env(fake, tmp_path, url, MDMBOT_ADMINS=ADMIN)
        procs = [DepReplica(env, tmp_path / f"replica{i}.log") for i in range(2)]
        try:
            for proc in procs:
                proc.wait_ready()
                proc.wait_until(lambda p=proc: call(f"{p.dep_url}/session", {})[0] == 400)
            yield url, procs
        finally:
            for proc in procs:
                proc.terminate(signal.SIGKILL)


def _token(url: str, name: str, *, renew: bool = False) -> Creds:
    """Link a server (or renew its token) through the core use cases, as `/mdm add` does."""
    engine = db.make_engine(url)
    vault, actor = Vault(key_from_setting("k" * 40)), Actor(ADMIN, operator=True)
    with db.unit_of_work(engine) as session:
        now = utc_now()
        if renew:
            server = servers.find_server(session, name)
            made = issuance.issue_token(session, vault, actor, server, now)
        else:
            made = servers.add_server(
                session,
                vault,
                actor,
                name=name,
                certificate=certs.self_signed_rsa().pem,
                release_devices=True,
                now=now,
            )
        issuance.activate_token(session, actor, made.token_id, now)
    engine.dispose()
    return open_token(made.content, certs.self_signed_rsa().key_pem, made.token_id)


def test_sessions_work_on_every_replica_and_a_replaced_token_is_reported_once(
    fake: FakeSlack, replicas: tuple[str, list[DepReplica]]
) -> None:
    url, (one, two) = replicas
    old = _token(url, "District Jamf")
    key = session_key(one.dep_url, old, realm="ADM")
    status, body, _ = call(f"{two.dep_url}/account", {"X-ADM-Auth-Session": key})
    assert status == 200 and json.loads(body)["server_name"] == "District Jamf"

    new = _token(url, "District Jamf", renew=True)
    status, body, _ = call(f"{two.dep_url}/account", {"X-ADM-Auth-Session": key})
    assert (status, body) == (401, "UNAUTHORIZED"), "replacement ends the old token's sessions"

    answers: list[tuple[int, str]] = []
    barrier = threading.Barrier(6)

    def attempt(replica: DepReplica) -> None:
        header = oauth_header(old, f"{replica.dep_url}/session")
        barrier.wait()
        answers.append(call(f"{replica.dep_url}/session", {"Authorization": header})[:2])

    threads = [threading.Thread(target=attempt, args=(r,)) for r in (one, two) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [(401, "token_rejected")] * 6

    def warnings() -> list[dict[str, object]]:
        found = fake.messages_in("C0ALERTS")
        return [m for m in found if "still presents the replaced token" in str(m["text"])]

    fake.wait_for(lambda: len(warnings()) >= 1, 10)
    time.sleep(1.5)
    assert len(warnings()) == 1, "one warning per replaced token across attempts and replicas"
    text = json.dumps(warnings()[0]["blocks"])
    assert "District Jamf" in text and "uploads the new token file" in text
    assert "127.0.0.1" not in text, "no raw address in Slack"

    assert session_key(two.dep_url, new)
    metrics = one.metrics()
    assert 'mdmbot_dep_session_failures_total{reason="token_rejected"}' in metrics
    assert 'mdmbot_tokens_installed{state="installed"} 1.0' in metrics


def test_workers_share_the_dep_port_and_its_sessions(fake: FakeSlack, tmp_path: Path) -> None:
    with postgres_schema(migrate=False) as url:
        proc = DepReplica(bot_env(fake, tmp_path, url), tmp_path / "workers.log", "--workers", "2")
        try:
            proc.wait_ready()
            proc.wait_until(lambda: call(f"{proc.dep_url}/session", {})[0] == 400)
            creds = _token(url, "District Mosyle")
            workers: set[str] = set()
            for _ in range(40):
                key = session_key(proc.dep_url, creds)
                status, body, headers = call(f"{proc.dep_url}/account", {"X-ADM-Auth-Session": key})
                assert status == 200 and json.loads(body)["server_name"] == "District Mosyle"
                workers.add(headers["X-Mdmbot-Worker"])
                if len(workers) == 2:
                    break
            assert len(workers) == 2, "both workers answer the device assignment service"
        finally:
            assert proc.terminate(signal.SIGTERM) == 0
