"""Commands that stop an MDM server or move its devices ask first at a terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.devices_support import csv_of, serial
from tests.e2e.test_cli import Cli, _valid_now
from tests.processes import run_cli


def at_terminal(cli: Cli, answer: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mdmbot ARGS` with a terminal as stdin, `answer` typed in advance."""
    main, terminal = os.openpty()
    try:
        if answer is not None:
            os.write(main, answer.encode() + b"\n")
        return run_cli(list(args), env=cli.env, cwd=cli.work, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(main)


def _tokens(cli: Cli, server: str) -> list[str]:
    return [t["status"] for t in cli.json("token", "list", server)]


def test_token_issue_cert_replace_and_remove_ask_at_a_terminal(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    cli.ok("server", "add", "Jamf", "--cert", "mdm.pem", "--out", "a.p7m")
    cli.ok("server", "add", "Mosyle", "--cert", "mdm.pem", "--out", "b.p7m")
    (cli.work / "ipads.csv").write_bytes(csv_of([serial(i) for i in range(3)]))
    cli.ok("devices", "import", "ipads.csv")
    cli.ok("devices", "assign", "Jamf", serial(0), serial(1), serial(2))
    cli.ok("devices", "default", "iPad", "Mosyle")

    # Declined: the consequence was shown, nothing changed, no file written.
    for args in (
        ("token", "issue", "Jamf", "--out", "new.p7m"),
        ("cert", "replace", "Jamf", "--cert", "mdm.pem", "--out", "new.p7m"),
    ):
        declined = at_terminal(cli, "n", *args)
        assert declined.returncode == 1, declined.stderr
        assert "its current token (expires " in declined.stdout
        assert "stops working at once" in declined.stdout
        assert declined.stdout.endswith("Nothing was changed.\n")
        assert not (cli.work / "new.p7m").exists()
    assert _tokens(cli, "Jamf") == ["active"]
    removal = at_terminal(cli, "", "server", "remove", "Jamf")
    assert removal.returncode == 1
    assert "its devices move: 3 devices to their family's default server." in removal.stdout
    assert [s["name"] for s in cli.json("server", "list")] == ["Jamf", "Mosyle"]

    # Accepted, or --yes: done.
    issued = at_terminal(cli, "y", "token", "issue", "Jamf", "--out", "new.p7m")
    assert issued.returncode == 0 and (cli.work / "new.p7m").exists()
    assert "the previous token no longer works" in issued.stdout
    assert _tokens(cli, "Jamf") == ["active", "superseded"]
    removed = at_terminal(cli, None, "server", "remove", "Jamf", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == (
        "Removed “Jamf”; its token is revoked. Moved 3 devices to their family's default server.\n"
    )

    # Without a terminal: act at once and say what happened.
    assert cli.ok("token", "issue", "Mosyle", "--out", "m.p7m").endswith(
        "Upload it to the MDM server: the previous token no longer works.\n"
    )
    assert cli.ok("server", "remove", "Mosyle") == (
        "Removed “Mosyle”; its token is revoked. Moved 3 devices to Unassigned.\n"
    )
