"""`mdmbot api-account …` through the real console script: create, list, revoke."""

from __future__ import annotations

import json
import re
import stat
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.asm_support import Account
from tests.devices_support import csv_of, serial
from tests.e2e.test_cli import Cli, _valid_now
from tests.processes import BotProcess, free_port

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_create_list_and_revoke(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    created = cli.json("api-account", "create", "Inventory script", "--key-out", "asm.pem")
    assert set(created) == {"client_id", "key_id", "scope", "label"}
    assert re.fullmatch(f"SCHOOLAPI\\.{UUID}", created["client_id"])
    assert re.fullmatch(UUID, created["key_id"])
    assert (created["scope"], created["label"]) == ("school.api", "Inventory script")
    key_file = cli.work / "asm.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"

    # The key file is written once: an existing file is never overwritten, and nothing is created.
    refused = cli.run("api-account", "create", "Second", "--key-out", "asm.pem")
    assert refused.returncode == 1
    assert refused.stderr.startswith("mdmbot: ") and "already exists" in refused.stderr
    assert key_file.read_bytes() and len(cli.json("api-account", "list")) == 1

    out = cli.ok("api-account", "create", "Vendor", "--key-out", "b.pem", "--scope", "business")
    business = re.search(r"Client ID: (BUSINESSAPI\.\S+)", out)
    assert business and "Key ID:" in out and "mode 0600" in out
    listed = cli.json("api-account", "list")
    assert [a["client_id"] for a in listed] == [business[1], created["client_id"]]
    assert all("key" not in k or k == "key_id" for a in listed for k in a)
    assert listed[0]["scope"] == "business.api" and listed[0]["revoked_at"] is None

    assert "no longer work" in cli.ok("api-account", "revoke", created["client_id"])
    again = cli.run("api-account", "revoke", created["client_id"])
    assert (again.returncode, again.stderr) == (
        1,
        f"mdmbot: The API account {created['client_id']} is already revoked.\n",
    )
    table = cli.ok("api-account", "list")
    assert "revoked" in table and "active" in table and "Inventory script" in table
    unknown = cli.run("api-account", "revoke", "SCHOOLAPI.nope")
    assert unknown.stderr == "mdmbot: There is no API account with client id SCHOOLAPI.nope.\n"
    bad = cli.run("api-account", "create", "X", "--key-out", "c.pem", "--scope", "district")
    assert bad.stderr == "mdmbot: “district” is not a scope: school or business.\n"
    assert not (cli.work / "c.pem").exists()


def test_the_walk_through_against_serve_no_slack(tmp_path: Path) -> None:
    """What the README shows: an account from the command line, a token, a listing, an
    assignment that `devices list` sees, and a revocation that stops the token at once."""
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    cli.ok("server", "add", "Jamf Pro", "--cert", "mdm.pem")
    (cli.work / "devices.csv").write_bytes(csv_of([serial(1), serial(2)]))
    cli.ok("devices", "import", "devices.csv")
    made = cli.json("api-account", "create", "Script", "--key-out", "asm.pem")
    account = Account(made["client_id"], made["key_id"], (cli.work / "asm.pem").read_bytes(),
                      made["scope"])  # fmt: skip
    dep_port, port = free_port(), free_port()
    process = BotProcess(
        cli.env, tmp_path / "serve.log", "serve", "--no-slack", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(free_port()),
        "--dep-host", "127.0.0.1", "--dep-port", str(dep_port),
    )  # fmt: skip
    base = f"http://127.0.0.1:{dep_port}"
    try:
        process.wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        query = urlencode(account.form(account.assertion(datetime.now(UTC))))
        token = _post(f"{base}/auth/oauth2/token?{query}", b"", {})["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        servers = _get(f"{base}/v1/mdmServers", bearer)["data"]
        assert [s["attributes"]["serverName"] for s in servers] == ["Jamf Pro"]
        assert servers[0]["links"]["self"].startswith(base + "/v1/mdmServers/")
        activity = {"data": {"type": "orgDeviceActivities",
                             "attributes": {"activityType": "ASSIGN_DEVICES"},
                             "relationships": {
                                 "mdmServer": {"data": {"type": "mdmServers",
                                                        "id": servers[0]["id"]}},
                                 "devices": {"data": [{"type": "orgDevices",
                                                       "id": serial(2)}]}}}}  # fmt: skip
        created = _post(f"{base}/v1/orgDeviceActivities", json.dumps(activity).encode(),
                        bearer | {"Content-Type": "application/json"})  # fmt: skip
        done = _get(f"{base}/v1/orgDeviceActivities/{created['data']['id']}", bearer)
        assert done["data"]["attributes"]["status"] == "COMPLETED"
        listed = cli.json("devices", "list", "--server", "Jamf Pro")
        assert [d["serial_number"] for d in listed] == [serial(2)]
        assert listed[0]["assigned_by"] == f"api:{account.client_id}"
        cli.ok("api-account", "revoke", account.client_id)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/v1/mdmServers", bearer)
        assert refused.value.code == 401
    finally:
        assert process.terminate() == 0


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


def _get(url: str, headers: dict[str, str]) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, data: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())
