"""`mdmbot devices …` through the real console script: import, assign, list, defaults, release."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.devices_support import HEADER, csv_of, serial
from tests.e2e.test_cli import MDMBOT, Cli, _valid_now


def test_the_device_flow(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    cli.ok("server", "add", "Jamf Pro", "--cert", "mdm.pem")
    cli.ok("server", "add", "Mosyle", "--cert", "mdm.pem")
    assert "New iPad devices now go to “Jamf Pro”" in cli.ok(
        "devices", "default", "ipad", "jamf pro"
    )
    macs = csv_of([serial(9)], "Mac", "OSX", "MacBook Air").split(b"\n", 1)[1]
    (cli.work / "devices.csv").write_bytes(csv_of([serial(1), serial(2), serial(3)]) + macs)

    out = cli.ok("devices", "import", "devices.csv")
    assert "Imported 4 devices: 4 new, 0 updated, 0 unchanged." in out
    assert "3 assigned to “Jamf Pro” (their family's default)" in out
    again = cli.ok("devices", "import", "devices.csv")
    assert "Imported 4 devices: 0 new, 0 updated, 4 unchanged." in again

    (cli.work / "serials.txt").write_text(f"{serial(2).lower()}\n{serial(3)}\t\n")
    out = cli.ok("devices", "assign", "Mosyle", serial(9), "--file", "serials.txt")
    assert "Assigned 3 devices to “Mosyle”." in out
    listed = cli.json("devices", "list", "--server", "Mosyle")
    assert [d["serial_number"] for d in listed] == [serial(2), serial(3), serial(9)]
    assert listed[0]["server"] == "Mosyle" and listed[0]["assigned_at"].endswith("Z")
    table = cli.ok("devices", "list")
    assert table.splitlines()[0].split() == [
        "SERIAL",
        "FAMILY",
        "MODEL",
        "ASSET",
        "TAG",
        "SERVER",
        "PROFILE",
    ]
    assert f"{serial(1)}  iPad" in table and "Jamf Pro" in table

    refused = cli.run("devices", "assign", "Mosyle", serial(1), "C02NOPE0000")
    assert refused.returncode == 1
    assert refused.stderr == (
        "mdmbot: Nothing was changed. Not assignable — unknown: C02NOPE0000.\n"
    )
    cli.ok("devices", "unassign", serial(9))
    assert [d["serial_number"] for d in cli.json("devices", "list", "--unassigned")] == [serial(9)]

    unconfirmed = cli.run("devices", "release", serial(1))
    assert (unconfirmed.returncode, unconfirmed.stderr) == (
        1,
        "mdmbot: Releasing cannot be undone: add --yes to confirm.\n",
    )
    assert f"Released 1 device: {serial(1)}" in cli.ok("devices", "release", serial(1), "--yes")
    shown = cli.ok("devices", "show", serial(1))
    assert "Server:        released" in shown
    assert serial(1) not in cli.ok("devices", "list")

    cli.ok("server", "remove", "Mosyle")
    defaults = cli.ok("devices", "defaults")
    assert "iPad     Jamf Pro\niPhone   -" in defaults
    moved = cli.json("devices", "show", serial(2))
    assert moved["server"] == "Jamf Pro"


def test_a_bad_csv_imports_nothing_and_lists_every_bad_row(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    rows = [
        HEADER,
        f"{serial(1)},iPad Air,d,Blue,iPad,iPadOS,,",
        "bad!,iPad Air,d,Blue,iPad,iPadOS,,",
        f"{serial(3)},iPad Air,d,Blue,Phone,iPadOS,,",
    ]
    (cli.work / "bad.csv").write_text("\n".join(rows) + "\n")
    result = cli.run("devices", "import", "bad.csv")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mdmbot: Nothing was imported: 2 bad row(s).",
        "line 3: “bad!” is not a serial number (8–20 letters and digits).",
        "line 4: “Phone” is not a device family: iPad, iPhone, iPod, Mac, AppleTV, Vision.",
    ]
    assert cli.json("devices", "list") == []
    missing = cli.run("devices", "import", "nowhere.csv")
    assert missing.returncode == 1 and "Cannot read nowhere.csv" in missing.stderr


def test_a_reader_that_closes_the_pipe_ends_the_listing_quietly(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "devices.csv").write_bytes(csv_of([serial(i) for i in range(400)]))
    cli.ok("devices", "import", "devices.csv")
    listing = subprocess.Popen(
        [*MDMBOT, "devices", "list", "--json"],
        cwd=cli.work,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert listing.stdout is not None and listing.stderr is not None
    assert listing.stdout.readline().strip() == b"["  # `| head -1`: one line, then gone
    listing.stdout.close()
    stderr = listing.stderr.read()
    assert (listing.wait(60), stderr) == (128 + signal.SIGPIPE, b""), "as `yes | head` ends"
