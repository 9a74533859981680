"""What the command line reads and prints: files that are not files, hostile CSV cells, wording."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from tests.devices_support import csv_of, serial
from tests.e2e.test_cli import Cli, _valid_now


def _linked(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    return cli


def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    cli = _linked(tmp_path)
    os.mkfifo(cli.work / "pipe.csv")
    for args in (
        ("devices", "import", "/dev/zero"),
        ("devices", "import", "pipe.csv"),
        ("server", "add", "Jamf", "--cert", "pipe.csv"),
        ("devices", "assign", "Jamf", "--file", "/dev/zero"),
    ):
        refused = cli.run(*args)
        assert refused.returncode == 1, args
        assert refused.stderr == f"mdmbot: {args[-1]} is not a regular file.\n", args


def test_out_with_a_trailing_slash_names_a_directory(tmp_path: Path) -> None:
    cli = _linked(tmp_path)
    refused = cli.run("server", "add", "Jamf", "--cert", "mdm.pem", "--out", "tokens/")
    assert (refused.returncode, refused.stderr) == (
        1,
        "mdmbot: Cannot write into tokens/: the directory does not exist.\n",
    )
    assert not (cli.work / "tokens").exists()
    assert cli.ok("server", "list") .startswith("No MDM servers yet.")
    (cli.work / "tokens").mkdir()
    cli.ok("server", "add", "Jamf", "--cert", "mdm.pem", "--out", "tokens/")
    assert [p.name.startswith("Jamf_Token_") for p in (cli.work / "tokens").iterdir()] == [True]


def test_hostile_cells_are_refused_and_names_print_escaped(tmp_path: Path) -> None:
    cli = _linked(tmp_path)
    rows = csv_of([serial(1), serial(2)]).decode().splitlines()
    rows[2] = rows[2].replace("Space Gray", "Gray\x1b]0;owned\x07\x1b[2J")
    (cli.work / "bad.csv").write_text("\n".join(rows) + "\n")
    refused = cli.run("devices", "import", "bad.csv")
    assert refused.returncode == 1
    assert "line 3: color holds a control or bidirectional formatting character" in refused.stderr
    assert "\x1b" not in refused.stderr
    # Cells stored before this check print as escapes, never as terminal commands.
    (cli.work / "good.csv").write_text("\n".join(rows[:2]) + "\n")
    cli.ok("devices", "import", "good.csv")
    engine = sa.create_engine(f"sqlite:///{cli.data_dir / 'mdmbot.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE device SET color = :c"), {"c": "Gray\x1b[2J\u202eAB"})
    engine.dispose()
    for args in (("devices", "show", serial(1)), ("devices", "list")):
        shown = cli.ok(*args)
        assert "\x1b" not in shown and "\u202e" not in shown
    assert "Gray\\x1b[2J\\u202eAB" in cli.ok("devices", "show", serial(1))


def test_plain_ids_plurals_and_who_acted(tmp_path: Path) -> None:
    cli = _linked(tmp_path)
    refused = cli.run("roles", "revoke", "U0ABCDEF12")
    assert refused.stderr == "mdmbot: U0ABCDEF12 has no mdmbot role.\n"
    cli.ok("server", "add", "Jamf", "--cert", "mdm.pem", "--out", "a.p7m")
    cli.ok("server", "add", "Mosyle", "--cert", "mdm.pem", "--out", "b.p7m")
    (cli.work / "one.csv").write_bytes(csv_of([serial(1), serial(2)]))
    cli.ok("devices", "import", "one.csv")
    assert cli.ok("devices", "assign", "Jamf", serial(1)) == "Assigned 1 device to “Jamf”.\n"
    assert cli.ok("devices", "assign", "Jamf", serial(1), serial(2)) == (
        "Assigned 1 device to “Jamf” (1 was already there).\n"
    )
    assert cli.ok("devices", "list", "--server", "Mosyle") == "No devices on “Mosyle”.\n"
    cli.ok("devices", "release", serial(2), "--yes")
    # Re-importing the inventory skips the released device and imports the rest.
    (cli.work / "more.csv").write_bytes(csv_of([serial(1), serial(2), serial(3)]))
    assert cli.ok("devices", "import", "more.csv") == (
        "Imported 2 devices: 1 new, 0 updated, 1 unchanged.\n"
        "  skipped 1 released device (they left the organisation)\n"
    )
    cli.ok("roles", "grant", "U0ABCDEF12", "Site", "Manager")
    (granted,) = cli.json("roles", "list")
    (server, _) = cli.json("server", "list")
    assert granted["granted_by"] == server["created_by"]
