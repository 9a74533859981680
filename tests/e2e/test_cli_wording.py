"""What the command line says: help, version, edits, duplicates, warnings, history, tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from wcwidth import wcswidth

from tests import certs
from tests.e2e.test_cli import Cli, _valid_now

DUPLICATE = (
    "mdmbot: An MDM server called “Mosyle School” already exists; names that differ only in "
    "case, spacing or character width count as the same.\n"
)


def test_mdmbot_alone_prints_help_and_version_prints_the_version(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    bare = cli.run()
    assert (bare.returncode, bare.stderr) == (0, "")
    assert bare.stdout.startswith("usage: mdmbot ") and "server" in bare.stdout
    assert cli.ok("--version") == f"mdmbot {metadata.version('mdmbot')}\n"
    assert not cli.data_dir.exists()  # neither touched the database


def test_edits_duplicates_warnings_history_and_tables(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    key = certs.rsa_key(2048, 1)
    ending = certs.build_certificate(
        key.public_key(), key, subject="old.example.edu",
        not_before=datetime.now(UTC) - timedelta(days=355), days=365,
    )  # fmt: skip
    (cli.work / "ending.pem").write_bytes(certs.CertAndKey(ending, key).pem)
    cli.ok("server", "add", "東京 Jamf", "--cert", "mdm.pem", "--out", "a.p7m", "--actor", "U0A")
    cli.ok("server", "add", "Mosyle", "--cert", "mdm.pem", "--out", "b.p7m", "--actor", "U0B")

    # Renaming to the same name changes nothing and says so; a rename names the old name.
    assert cli.ok("server", "edit", "Mosyle", "--rename", "Mosyle") == (
        "Nothing changed: “Mosyle” already has that name and release devices allowed.\n"
    )
    assert cli.ok("server", "edit", "mosyle", "--rename", "Mosyle School") == (
        "Renamed “Mosyle” to “Mosyle School”; release devices allowed.\n"
    )
    # One wording for a duplicate name, whether exact, by case or by width, on add and rename.
    for args in (
        ("server", "add", "Mosyle School", "--cert", "mdm.pem"),
        ("server", "add", "ｍｏｓｙｌｅ  SCHOOL", "--cert", "mdm.pem"),
        ("server", "edit", "東京 Jamf", "--rename", "MOSYLE SCHOOL"),
    ):
        refused = cli.run(*args)
        assert (refused.returncode, refused.stderr) == (1, DUPLICATE), args

    # A replacement certificate that runs out within 30 days is accepted with a warning.
    replaced = cli.run("cert", "replace", "Mosyle School", "--cert", "ending.pem", "--out", "c.p7m")
    assert replaced.returncode == 0
    expires = ending.not_valid_after_utc.strftime("%Y-%m-%d")
    assert replaced.stderr == (
        f"warning: This certificate expires on {expires}, within 30 days; get a new one from "
        "your MDM server soon.\n"
    )

    # Wide (East Asian) names keep the columns aligned on the terminal.
    lines = cli.ok("server", "list").splitlines()
    starts = [
        wcswidth(line[: line.index(word)])
        for line, word in zip(lines, ("RELEASE", "yes", "yes"), strict=True)
    ]
    assert len(set(starts)) == 1, lines

    # A removed server's tokens stay listed by its name.
    cli.ok("server", "remove", "Mosyle School")
    history = cli.json("token", "list", "mosyle school")
    assert [(t["server_name"], t["status"], t["reason"]) for t in history] == [
        ("Mosyle School", "revoked", "server removed"),
        ("Mosyle School", "superseded", "certificate replaced"),
    ]
    assert "no MDM server called “Nope”" in cli.run("token", "list", "Nope").stderr
