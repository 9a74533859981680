"""`mdmbot api-account …` through the real console script: create, list, revoke."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.e2e.test_cli import Cli

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
        1, f"mdmbot: The API account {created['client_id']} is already revoked.\n"
    )
    table = cli.ok("api-account", "list")
    assert "revoked" in table and "active" in table and "Inventory script" in table
    unknown = cli.run("api-account", "revoke", "SCHOOLAPI.nope")
    assert unknown.stderr == "mdmbot: There is no API account with client id SCHOOLAPI.nope.\n"
    bad = cli.run("api-account", "create", "X", "--key-out", "c.pem", "--scope", "district")
    assert bad.stderr == "mdmbot: “district” is not a scope: school or business.\n"
    assert not (cli.work / "c.pem").exists()
