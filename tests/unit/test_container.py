"""The container's health check, run as Docker runs it: one line of output, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check_script() -> str:
    dockerfile = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^HEALTHCHECK .*?\\\n\s+CMD (\[.*\])$", dockerfile, re.M)
    assert found, "a HEALTHCHECK in exec form"
    command = json.loads(found.group(1))
    assert command[:2] == ["python", "-c"]
    return str(command[2])


@pytest.fixture
def healthz() -> Iterator[tuple[int, list[int]]]:
    """A /healthz answering the status at the head of the list."""
    statuses = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0])
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], statuses
    server.shutdown()
    server.server_close()


def _run(port: int, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _check_script()],
        env={"MDMBOT_MODE": mode, "PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_health_check_prints_one_line_whatever_happens(
    healthz: tuple[int, list[int]],
) -> None:
    port, statuses = healthz
    ok = _run(port, "http")
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0, f"healthy: http://127.0.0.1:{port}/healthz\n", ""
    )  # fmt: skip
    statuses[0] = 503
    failing = _run(port, "http")
    assert failing.returncode == 1 and failing.stderr == ""
    assert failing.stdout.startswith("unhealthy: ") and failing.stdout.count("\n") == 1
    assert failing.stdout.endswith("/healthz: Service Unavailable\n")
    socket_mode = _run(port, "socket")
    assert (socket_mode.returncode, socket_mode.stderr) == (0, "")


def test_an_unreachable_server_is_one_line_too() -> None:
    refused = _run(1, "http")
    assert refused.returncode == 1 and refused.stderr == ""
    assert refused.stdout.startswith("unhealthy: http://127.0.0.1:1/healthz: ")
    assert refused.stdout.count("\n") == 1


def test_compose_publishes_the_device_assignment_service() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert 'MDMBOT_DEP_PORT: "8443"' in compose and '- "8443:8443"' in compose
