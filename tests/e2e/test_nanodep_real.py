"""Against NanoDEP's real `depserver` (from NanoDEP's releases): link without a file,
NanoDEP's proxy reads `/account` from mdmbot, three renewals installed without `force`, the old
tokens `token_rejected`, the newest in use. Skipped unless MDMBOT_TEST_DEPSERVER names the binary.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.serve import serve_dep
from tests.dep_client import call, dep_service, oauth_header
from tests.e2e.conftest import ADMIN
from tests.e2e.test_cli import Cli
from tests.e2e.test_cli_mdm import _creds
from tests.e2e.test_slack_mdm import _connection_values, _open_add
from tests.fakemdm import ALLOW_LOOPBACK
from tests.fakeslack import FakeSlack
from tests.processes import free_port
from tests.slack_harness import Bot

DEPSERVER = os.environ.get("MDMBOT_TEST_DEPSERVER", "")
KEY = "real-nanodep-api-key"
pytestmark = pytest.mark.skipif(
    not os.access(DEPSERVER, os.X_OK), reason="MDMBOT_TEST_DEPSERVER is not an executable"
)


def _nanodep(path: str, method: str = "GET") -> tuple[int, bytes]:
    auth = base64.b64encode(f"depserver:{KEY}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    request = urllib.request.Request(path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def depserver(tmp_path: Path) -> Iterator[str]:
    """NanoDEP's depserver on a free port with file storage."""
    port = free_port()
    process = subprocess.Popen(
        [DEPSERVER, "-api", KEY, "-listen", f"127.0.0.1:{port}", "-storage-dsn", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/version", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_link_and_three_renewals_against_the_real_depserver(
    depserver: str, tmp_path: Path
) -> None:
    cli = Cli(tmp_path / "mdmbot")
    cli.env["MDMBOT_MDM_ALLOW_NETWORKS"] = ALLOW_LOOPBACK
    cli.ok("db", "upgrade")
    (cli.work / "api.key").write_text(KEY)
    with dep_service(cli.data_dir) as mdmbot_dep:
        out = cli.ok(
            "server", "add", "school1", "--mdm", "nanodep", "--mdm-url", depserver,
            "--mdm-dep-name", "school1", "--mdm-api-key-file", "api.key",
            "--mdm-base-url", f"{mdmbot_dep}/",
        )  # fmt: skip
        assert out.startswith("Installed in NanoDEP (school1) — waiting for its first use")
        held = []
        for renewal in range(4):
            if renewal:
                assert cli.ok("token", "issue", "school1").startswith("Installed in NanoDEP")
            status, body = _nanodep(f"{depserver}/proxy/school1/account")
            assert status == 200, body
            assert json.loads(body)["server_name"] == "school1"
            status, body = _nanodep(f"{depserver}/v1/tokens/school1")
            assert status == 200, body
            held.append(json.loads(body))
        assert len({t["consumer_key"] for t in held}) == 1
        for old in held[:-1]:
            header = oauth_header(_creds(old), f"{mdmbot_dep}/session")
            status, body, _ = call(f"{mdmbot_dep}/session", {"Authorization": header})
            assert (status, body) == (401, "token_rejected")
        newest = cli.json("token", "list", "school1")[0]
        assert newest["status"] == "active" and newest["installed_at"]
        assert "in use since" in cli.ok("server", "show", "school1")


def test_add_from_slack_with_the_real_depserver_installs_and_points_it_at_mdmbot(
    depserver: str, bot: Bot, fake: FakeSlack
) -> None:
    dep = serve_dep(bot.ctx, bot.svc, "127.0.0.1", 0)
    try:
        bot.ctx.settings.mdmbot_dep_public_url = f"http://127.0.0.1:{dep.port}"
        view = _open_add(bot, fake)
        values = _connection_values(depserver, "school2", KEY)
        assert bot.submit(ADMIN, view, values, view["id"]).status == 200
        bot.wait_idle(lambda: "Installed" in json.dumps(fake.views[view["id"]]), timeout=30)
        assert "Installed in NanoDEP (school2)" in json.dumps(fake.views[view["id"]])
        assert not fake.uploads, "installed: no file by DM"
        status, body = _nanodep(f"{depserver}/proxy/school2/account")
        assert status == 200 and json.loads(body)["server_name"] == "school2", body
        reply = bot.command(ADMIN, "show school2")
        assert "in use since" in json.dumps(reply.json()), "NanoDEP's first /session was seen"
    finally:
        dep.close()
