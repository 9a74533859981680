"""An assignment through the School Manager API is seen by NanoDEP's real `depsyncer` at its next
sync: mdmbot installs the server's token into NanoDEP's `depserver` (issue 17's connection), an
API account assigns devices, `depsyncer` fetches from mdmbot and posts what it got to a webhook.
Skipped unless MDMBOT_TEST_DEPSERVER and MDMBOT_TEST_DEPSYNCER name the binaries."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.asm.app import apple_port_app
from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import Listener, start_in_background
from core.settings import Settings
from tests.asm_support import ApplePort
from tests.devices_support import csv_of, serial
from tests.e2e.test_cli import Cli
from tests.e2e.test_nanodep_real import DEPSERVER, KEY
from tests.e2e.test_nanodep_real import depserver as depserver  # the fixture
from tests.fakemdm import ALLOW_LOOPBACK
from tests.slack_harness import Clock

DEPSYNCER = os.environ.get("MDMBOT_TEST_DEPSYNCER", "")
pytestmark = pytest.mark.skipif(
    not (os.access(DEPSERVER, os.X_OK) and os.access(DEPSYNCER, os.X_OK)),
    reason="MDMBOT_TEST_DEPSERVER and MDMBOT_TEST_DEPSYNCER are not executables",
)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Any]]]:
    """A receiver of depsyncer's webhook posts."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length) or b"null"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", received
    server.shutdown()


def test_depsyncer_sees_an_api_assignment(
    depserver: str,
    webhook: tuple[str, list[Any]],
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "mdmbot")
    cli.env["MDMBOT_MDM_ALLOW_NETWORKS"] = ALLOW_LOOPBACK  # depserver and mdmbot run on loopback
    cli.ok("db", "upgrade")
    (cli.work / "api.key").write_text(KEY)
    (cli.work / "devices.csv").write_bytes(csv_of([serial(i) for i in range(5)]))
    cli.ok("devices", "import", "devices.csv")
    settings = Settings(
        mdmbot_database_url=f"sqlite:///{cli.data_dir / 'mdmbot.db'}",
        mdmbot_data_dir=cli.data_dir,
        _env_file=None,  # type: ignore[call-arg]
    )
    clock = Clock()
    ctx = AppContext(settings, clock=clock)
    app = apple_port_app(ctx, build_dep_app(ctx))
    listener = start_in_background(Listener("apple", "127.0.0.1", 0, app), 2)
    port = ApplePort(ctx, clock, f"http://127.0.0.1:{listener.port}", listener)
    try:
        cli.ok(
            "server", "add", "school1", "--mdm", "nanodep", "--mdm-url", depserver,
            "--mdm-dep-name", "school1", "--mdm-api-key-file", "api.key",
            "--mdm-base-url", f"{port.url}/",
        )  # fmt: skip
        token = port.token(port.account("rehearsal"))
        (server,) = port.call("GET", "/v1/mdmServers", token=token)[2]["data"]
        activity = {"data": {"type": "orgDeviceActivities",
                             "attributes": {"activityType": "ASSIGN_DEVICES"},
                             "relationships": {
                                 "mdmServer": {"data": {"type": "mdmServers", "id": server["id"]}},
                                 "devices": {"data": [{"type": "orgDevices", "id": serial(i)}
                                                      for i in (1, 3)]}}}}  # fmt: skip
        assert port.call("POST", "/v1/orgDeviceActivities", token=token, body=activity)[0] == 201
        # One sync run on the depserver's own file storage (the fixture keeps it in tmp_path).
        result = subprocess.run(
            [DEPSYNCER, "-storage-dsn", str(tmp_path), "-duration", "0",
             "-webhook-url", webhook[0], "-debug", "school1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        posted = json.dumps(webhook[1])
        assert serial(1) in posted and serial(3) in posted, (posted, result.stderr)
        assert serial(0) not in posted
    finally:
        listener.close()
        ctx.engine.dispose()
