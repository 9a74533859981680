"""`--out` never clobbers a file, and `server add` is one unit: a token file, or nothing at all."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import postgres_schema
from tests.e2e.test_cli import Cli, _valid_now


def _migrated(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    return cli


def _cert(cli: Cli) -> Path:
    path = cli.work / "mdm.pem"
    path.write_bytes(_valid_now(0, "mdm.example.edu").pem)
    return path


def test_out_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    cli = _migrated(tmp_path)
    cli.ok("server", "add", "Jamf Pro", "--cert", str(_cert(cli)), "--out", "first.p7m")
    key = cli.work / "mdm-private-key.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nprecious\n-----END PRIVATE KEY-----\n")

    refused = cli.run("token", "issue", "Jamf Pro", "--out", str(key))
    assert refused.returncode == 1
    assert refused.stderr == f"mdmbot: {key} already exists; pass --force to overwrite it.\n"
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\nprecious")
    tokens = cli.json("token", "list")
    assert [t["status"] for t in tokens] == ["active"], "a refusal changes nothing"

    cli.ok("token", "issue", "Jamf Pro", "--out", str(key), "--force")
    assert key.read_bytes().startswith(b"Content-Type: application/pkcs7-mime")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [t["status"] for t in cli.json("token", "list")] == ["active", "superseded"]
    assert not list(cli.work.glob(".mdmbot-*")), "no temporary file is left behind"


def test_out_may_name_a_directory_for_apples_file_name(tmp_path: Path) -> None:
    cli = _migrated(tmp_path)
    tokens = cli.work / "tokens"
    tokens.mkdir()
    out = cli.ok("server", "add", "Jamf Pro", "--cert", str(_cert(cli)), "--out", str(tokens))
    [written] = tokens.iterdir()
    assert written.name.startswith("Jamf_Pro_Token_") and written.name in out
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_add_with_an_unwritable_out_leaves_nothing_and_a_retry_works(tmp_path: Path) -> None:
    cli = _migrated(tmp_path)
    cert = _cert(cli)
    missing = tmp_path / "no-such-dir" / "token.p7m"
    refused = cli.run("server", "add", "Jamf Pro", "--cert", str(cert), "--out", str(missing))
    assert refused.returncode == 1
    assert "does not exist" in refused.stderr and "previous token" not in refused.stderr
    assert cli.json("server", "list") == []
    assert cli.json("token", "list") == []

    cli.ok("server", "add", "Jamf Pro", "--cert", str(cert), "--out", "token.p7m")
    [server] = cli.json("server", "list")
    assert (server["name"], server["state"]) == ("Jamf Pro", "ok")


@pytest.mark.postgres
def test_four_parallel_token_issues_on_postgresql_leave_one_active_token(tmp_path: Path) -> None:
    with postgres_schema() as url:
        cli = Cli(tmp_path, database_url=url)
        cli.ok("server", "add", "Jamf Pro", "--cert", str(_cert(cli)), "--out", "first.p7m")
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(
                pool.map(
                    lambda n: cli.run("token", "issue", "Jamf Pro", "--out", f"t{n}.p7m"), range(4)
                )
            )
        tokens = cli.json("token", "list")
    assert [t["status"] for t in tokens].count("active") == 1
    for n, result in enumerate(results):
        if result.returncode == 0:
            assert (cli.work / f"t{n}.p7m").exists()
        else:
            assert "Someone else just replaced the token" in result.stderr
            assert not (cli.work / f"t{n}.p7m").exists(), "the loser's file is never written"
