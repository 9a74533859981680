"""1,000 clients trickling a header into one port never stop `serve` answering on any port."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.dep_client import Creds, call, oauth_header
from tests.e2e.conftest import ADMIN
from tests.e2e.test_dep_replicas import DepReplica, _token
from tests.fakeslack import FakeSlack
from tests.processes import bot_env

SLOW = 1000  # connections trickling a header at once (tests/slowloris.py, a line every 2 s)
SECONDS = 20.0  # how long each port is attacked
ANSWER_WITHIN = 1.0
ROOT = Path(__file__).resolve().parents[2]
SESSION = "X-ADM-Auth-Session"


def _timed(url: str, headers: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    status, body, _ = call(url, headers)
    return status, body, time.monotonic() - started


def _answers_during(
    attack: subprocess.Popen[bytes], proc: DepReplica, creds: Creds
) -> tuple[dict[str, float], int]:
    """A normal client's DEP pairs and /healthz while the attack runs: slowest of each, count."""
    slowest: dict[str, float] = {}
    answers = 0
    while attack.poll() is None:
        header = oauth_header(creds, f"{proc.dep_url}/session")
        status, body, took = _timed(f"{proc.dep_url}/session", {"Authorization": header})
        assert status == 200, body
        key = json.loads(body)["auth_session_token"]
        status, body, took_account = _timed(f"{proc.dep_url}/account", {SESSION: key})
        assert status == 200, body
        started = time.monotonic()
        with urllib.request.urlopen(f"{proc.url}/healthz", timeout=5) as response:
            assert response.status == 200
        times = {"/session": took, "/account": took_account, "/healthz": time.monotonic() - started}
        for path, seconds in times.items():
            slowest[path] = max(slowest.get(path, 0.0), seconds)
        answers += 1
        time.sleep(0.05)
    return slowest, answers


@pytest.fixture(autouse=True)
def enough_files() -> None:
    """The attack holds SLOW sockets in its process and as many in the server's."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4 * SLOW:
        pytest.skip(f"open-file limit {hard} is below {4 * SLOW}")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_slow_headers_on_one_port_never_delay_answers(
    fake: FakeSlack, tmp_path: Path, workers: str
) -> None:
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    proc = DepReplica(bot_env(fake, tmp_path, url, MDMBOT_ADMINS=ADMIN), tmp_path / "serve.log",
                      "--workers", workers)
    try:
        proc.wait_ready()
        proc.wait_until(lambda: call(f"{proc.dep_url}/session", {})[0] == 400)
        creds = _token(url, "Springfield Jamf")
        # The token's first session installs it (a durable write, rotation checklists, audit):
        # done before the attack, which times the routine requests of a working MDM server.
        header = oauth_header(creds, f"{proc.dep_url}/session")
        assert call(f"{proc.dep_url}/session", {"Authorization": header})[0] == 200
        for port, request_line in (
            (proc.dep_port, "GET /session HTTP/1.1"),
            (proc.port, "POST /slack/events HTTP/1.1"),
        ):
            attack = subprocess.Popen(
                [sys.executable, "-m", "tests.slowloris", str(port), request_line, str(SLOW),
                 str(SECONDS)],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            try:
                slowest, answers = _answers_during(attack, proc, creds)
            finally:
                if attack.poll() is None:
                    attack.kill()
            out, _ = attack.communicate(timeout=30)
            counts = json.loads(out)
            assert counts["peak"] >= 0.95 * SLOW, f"only {counts['peak']} slow clients connected"
            assert counts["cut"] >= SLOW, "the header deadline cut the slow clients"
            assert answers >= 10
            assert max(slowest.values()) < ANSWER_WITHIN, (
                f"port {port}: slowest answers {slowest} with {counts['peak']} slow clients"
            )
    finally:
        proc.terminate()
