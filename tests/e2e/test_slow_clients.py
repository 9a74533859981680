"""1,000 clients trickling a header into one port never stop `serve` answering on any port."""

from __future__ import annotations

import asyncio
import json
import resource
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.dep_client import call, oauth_header
from tests.e2e.conftest import ADMIN
from tests.e2e.test_dep_replicas import DepReplica, _token
from tests.fakeslack import FakeSlack
from tests.processes import bot_env

SLOW = 1000  # connections trickling a header at once
SECONDS = 20.0  # how long each port is attacked
LINE_EVERY = 2.0  # one more header line per connection this often
ANSWER_WITHIN = 1.0


class Trickle:
    """SLOW connections, each sending one header line every LINE_EVERY s, reconnecting when cut."""

    def __init__(self, port: int, request_line: bytes) -> None:
        self.port, self.request_line = port, request_line
        self.open = self.peak = self.cut = self.connects = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        stop_at = time.monotonic() + SECONDS
        await asyncio.gather(*(self._client(stop_at) for _ in range(SLOW)))

    async def _client(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self.connects += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                writer.write(self.request_line + b"Host: 127.0.0.1\r\n")
                line = 0
                while time.monotonic() < stop_at:
                    try:
                        if await asyncio.wait_for(reader.read(1024), LINE_EVERY) == b"":
                            break  # the server closed the connection
                    except TimeoutError:
                        pass
                    line += 1
                    writer.write(b"X-Slow-%d: %d\r\n" % (line, line))
                    await writer.drain()
                else:
                    continue
                self.cut += 1
            except OSError:
                self.cut += 1
            finally:
                self.open -= 1
                writer.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
    started = time.monotonic()
    status, _, _ = call(url, headers or {})
    return status, time.monotonic() - started


@pytest.fixture(autouse=True)
def enough_files() -> None:
    """The attack holds about SLOW sockets in this process (and as many in the server's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLOW:
        if hard != resource.RLIM_INFINITY and hard < 4 * SLOW:
            pytest.skip(f"open-file limit {hard} is below {4 * SLOW}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (4 * SLOW, hard))


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
        for port, request_line in (
            (proc.dep_port, b"GET /session HTTP/1.1\r\n"),
            (proc.port, b"POST /slack/events HTTP/1.1\r\n"),
        ):
            attack = Trickle(port, request_line)
            attack.thread.start()
            slowest: dict[str, float] = {}
            answers = 0
            while attack.thread.is_alive():
                header = oauth_header(creds, f"{proc.dep_url}/session")
                started = time.monotonic()
                status, body, _ = call(f"{proc.dep_url}/session", {"Authorization": header})
                took = {"/session": time.monotonic() - started}
                assert status == 200, body
                key = json.loads(body)["auth_session_token"]
                status, took["/account"] = _get(
                    f"{proc.dep_url}/account", {"X-ADM-Auth-Session": key}
                )
                assert status == 200
                started = time.monotonic()
                with urllib.request.urlopen(f"{proc.url}/healthz", timeout=5) as response:
                    assert response.status == 200
                took["/healthz"] = time.monotonic() - started
                for path, seconds in took.items():
                    slowest[path] = max(slowest.get(path, 0.0), seconds)
                answers += 1
                time.sleep(0.05)
            attack.thread.join()
            assert attack.peak >= 0.95 * SLOW, f"only {attack.peak} slow clients were connected"
            assert attack.cut >= SLOW, "the header deadline cut the slow clients"
            assert answers >= 10
            assert max(slowest.values()) < ANSWER_WITHIN, (
                f"port {port}: slowest answers {slowest} with {attack.peak} slow clients"
            )
    finally:
        proc.terminate()
