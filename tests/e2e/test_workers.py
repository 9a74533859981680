"""`mdmbot serve --http --workers 2`: one port, two processes, once-only work done once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import db, lease
from tests.conftest import postgres_schema
from tests.e2e.conftest import ADMIN
from tests.e2e.test_replicas import assert_alerted_once
from tests.e2e.test_serve import post_command
from tests.fakeslack import FakeSlack
from tests.processes import ServeProcess, bot_env, mdmbot_command
from tests.slack_harness import Bot

COMMANDS = 'mdmbot_slack_requests_total{kind="command",status="200"}'


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: the workers' start-up migrates it (once, before forking)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_schema(migrate=False) as url:
        yield url


def children(pid: int) -> set[int]:
    """The live child processes of `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """The live processes under `pid`: each listener's granian server and its workers."""
    found = children(pid)
    for child in list(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_sweep_once_sum_metrics_and_stop_on_sigterm(
    fake: FakeSlack, fresh_url: str, tmp_path: Path
) -> None:
    env = bot_env(
        fake,
        tmp_path,
        fresh_url,
        MDMBOT_ADMINS=ADMIN,
        MDMBOT_LOG_FORMAT="json",
        MDMBOT_LEASE_SECONDS="2",
        MDMBOT_SWEEP_MINUTES="0.02",
    )
    proc = ServeProcess(env, tmp_path / "serve.log", "--workers", "2")
    try:
        proc.wait_ready()
        # A granian server per listener (Slack, metrics), each with its workers: 2 and 1.
        proc.wait_until(lambda: len(descendants(proc.proc.pid)) == 2 + 2 + 1)
        workers = descendants(proc.proc.pid)

        # Requests land on both workers; /metrics counts every one of them, whoever answers.
        answered: dict[str, int] = {}
        while len(answered) < 2 or sum(answered.values()) < 10:
            assert sum(answered.values()) < 300, f"one worker answered everything: {answered}"
            status, body, pid = post_command(proc.url, "help", ADMIN, fake)
            assert status == 200 and "Administrator" in body, "MDMBOT_ADMINS granted once"
            answered[pid] = answered.get(pid, 0) + 1
        assert len(answered) == 2 and {int(pid) for pid in answered} <= workers
        assert proc.metric(COMMANDS) == sum(answered.values())

        # One lease holder among the workers, and an alert due now is posted once.
        assert proc.metric("mdmbot_scheduler_leader") == 1.0
        assert_alerted_once(fake, fresh_url, "Mosyle")
        assert proc.metric("mdmbot_scheduler_leader") == 1.0

        # Slack's retries of one event, spread over both workers, are handled once.
        harness = Bot.__new__(Bot)
        harness.fake, harness.url, harness._seq = fake, proc.url, 0
        home = {"type": "app_home_opened", "user": ADMIN, "tab": "home"}
        barrier = threading.Barrier(6)

        def deliver() -> None:
            barrier.wait()
            assert harness.event(home, event_id="Ev0WORKERS").status == 200

        threads = [threading.Thread(target=deliver) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        fake.wait_for(lambda: len(fake.calls_to("views.publish")) == 1, 10)
        time.sleep(1)
        assert len(fake.calls_to("views.publish")) == 1

        # Metrics live on their own listener only.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{proc.url}/metrics", timeout=5)
        assert refused.value.code == 404
    finally:
        code = proc.terminate()
    assert code == 0
    assert not any(alive(pid) for pid in workers), "every worker stopped with the master"
    lines = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert all(line["level"] in ("info", "warning") for line in lines), "no error was logged"
    engine = db.make_engine(fresh_url)
    with db.unit_of_work(engine, readonly=True) as session:
        assert lease.holder(session, "scheduler", datetime.now(UTC)) is None, "lease handed back"
    engine.dispose()


def oversized(port: int) -> tuple[bytes, float]:
    """Declare a 64 MiB body, send none of it: what comes back, and how fast."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: bot\r\n"
            b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n"
        )
        answer = sock.recv(200)
        return answer, time.monotonic() - started


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_oversized_declared_body_gets_413_at_once(
    fake: FakeSlack, tmp_path: Path, workers: str
) -> None:
    proc = ServeProcess(bot_env(fake, tmp_path), tmp_path / "serve.log", "--workers", workers)
    try:
        proc.wait_ready()
        answer, elapsed = oversized(proc.port)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert elapsed < 2
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{proc.url}/metrics", timeout=5)
        assert refused.value.code == 404, "/metrics is not on the Slack port"
        assert proc.health()["status"] == "ok"
    finally:
        assert proc.terminate(signal.SIGTERM) == 0


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(
    fake: FakeSlack, tmp_path: Path
) -> None:
    proc = ServeProcess(bot_env(fake, tmp_path), tmp_path / "serve.log", "--workers", "1")
    try:
        proc.wait_ready()
        with urllib.request.urlopen(f"{proc.url}/healthz", timeout=5) as response:
            first = int(response.headers["X-Mdmbot-Worker"])
        assert first in descendants(proc.proc.pid)
        os.kill(first, signal.SIGKILL)
        proc.wait_until(lambda: first not in descendants(proc.proc.pid))
        assert proc.wait_ready()["status"] == "ok"
        with urllib.request.urlopen(f"{proc.url}/healthz", timeout=5) as response:
            assert int(response.headers["X-Mdmbot-Worker"]) not in (first, 0)
    finally:
        assert proc.terminate(signal.SIGTERM) == 0


def test_workers_are_refused_in_socket_mode(fake: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(fake, tmp_path, SLACK_APP_TOKEN="xapp-1-A1-1-secret")
    result = subprocess.run(
        [*mdmbot_command(), "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("mdmbot: --workers is for HTTP mode")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_refused_in_one_line(
    fake: FakeSlack, tmp_path: Path, workers: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        listen = ["--host", "127.0.0.1", "--port", port, "--workers", workers]
        result = subprocess.run(
            [*mdmbot_command(), "serve", "--http", *listen],
            env=bot_env(fake, tmp_path),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mdmbot: Cannot listen on 127.0.0.1:{port} for slack (Address already in use); "
        "is another process using it?"
    )
