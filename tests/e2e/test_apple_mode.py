"""Apple mode end to end: one mdmbot in its usual mode serves Apple's School Manager API (it
plays Apple); another, in Apple mode, syncs from it, assigns through it from the command line
and from its Slack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.slack.builders import device_blocks as ui
from tests.devices_support import csv_of, serial
from tests.e2e.conftest import ADMIN
from tests.e2e.test_cli import Cli, _valid_now
from tests.e2e.test_cli_api_accounts import _answers
from tests.e2e.test_slack_devices import dm_texts, open_modal
from tests.fakeslack import FakeSlack
from tests.processes import BotProcess, free_port
from tests.slack_harness import Bot


@dataclass
class Apple:
    """The mdmbot that plays Apple: its operator's shell and the origin of its Apple port."""

    cli: Cli
    origin: str
    account: dict[str, str]
    key_file: Path

    def devices_of(self, server: str) -> list[str]:
        """Serials "Apple" has on `server`."""
        return [d["serial_number"] for d in self.cli.json("devices", "list", "--server", server)]


@pytest.fixture
def apple(tmp_path: Path) -> Iterator[Apple]:
    cli = Cli(tmp_path / "apple")
    cli.ok("db", "upgrade")
    for index, name in enumerate(("Jamf Pro", "Mosyle")):
        (cli.work / f"{index}.pem").write_bytes(_valid_now(index, "mdm.example.edu").pem)
        cli.ok("server", "add", name, "--cert", f"{index}.pem")
    (cli.work / "devices.csv").write_bytes(csv_of([serial(i) for i in range(1, 5)]))
    cli.ok("devices", "import", "devices.csv")
    cli.ok("devices", "assign", "Jamf Pro", serial(1))
    account = cli.json("api-account", "create", "mdmbot", "--key-out", "asm.pem")
    dep_port, port = free_port(), free_port()
    process = BotProcess(
        cli.env, tmp_path / "apple.log", "serve", "--no-slack", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(free_port()),
        "--dep-host", "127.0.0.1", "--dep-port", str(dep_port),
    )  # fmt: skip
    try:
        process.wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        yield Apple(cli, f"http://127.0.0.1:{dep_port}", account, cli.work / "asm.pem")
    finally:
        assert process.terminate() == 0


def _apple_settings(apple: Apple) -> dict[str, str]:
    return {
        "MDMBOT_APPLE_API": "school",
        "MDMBOT_APPLE_CLIENT_ID": apple.account["client_id"],
        "MDMBOT_APPLE_KEY_ID": apple.account["key_id"],
        "MDMBOT_APPLE_KEY_FILE": str(apple.key_file),
        "MDMBOT_APPLE_API_URL": apple.origin,
        "MDMBOT_APPLE_TOKEN_URL": f"{apple.origin}/auth/oauth2/v2/token",
    }


def test_the_school_syncs_and_assigns_through_apple(
    apple: Apple, fake: FakeSlack, tmp_path: Path
) -> None:
    school = Cli(tmp_path / "school")
    school.env.update(_apple_settings(apple), MDMBOT_SECRET_KEY="k" * 40)  # the Bot's key
    school.ok("db", "upgrade")
    synced = school.json("apple", "sync", "--json")
    assert (synced["servers"], synced["devices"]) == (2, 4) and synced["changes"] >= 6
    assert school.json("apple", "sync", "--json")["changes"] == 0
    listed = {d["serial_number"]: d["server"] for d in school.json("devices", "list", "--json")}
    assert listed == {serial(1): "Jamf Pro", serial(2): None, serial(3): None, serial(4): None}

    shown = school.json("server", "show", "Jamf Pro", "--json")
    assert set(shown["apple"]) == {"id", "last_connected_at"}
    assert len(shown["apple"]["id"]) == 32 and shown["apple"]["last_connected_at"] is None
    assert {"name", "token_expires_at", "downloaded_by", "mdm"} <= set(shown)

    done = school.run("devices", "assign", "Mosyle", serial(2), "--wait", "30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Apple completed: 1 device now on “Mosyle”")
    assert apple.devices_of("Mosyle") == [serial(2)]
    assert school.json("devices", "show", serial(2), "--json")["server"] == "Mosyle"
    unknown = school.run("devices", "assign", "Mosyle", "C02UNKNOWN1")
    assert unknown.returncode == 1 and unknown.stdout.startswith("Apple reports a failure")
    refused = school.run("token", "issue", "Jamf Pro")
    assert refused.returncode == 2 and "issues no tokens" in refused.stderr

    # The school's Slack: an assignment in the modal reaches Apple.
    bot = Bot(fake, school.env.get("MDMBOT_DATABASE_URL")
              or f"sqlite:///{school.data_dir / 'mdmbot.db'}", str(school.data_dir),
              extra_env={k.lower(): v for k, v in _apple_settings(apple).items()})  # fmt: skip
    try:
        bot.grant(ADMIN)
        view = open_modal(bot, fake, ADMIN, "assign Jamf Pro")
        assert view["callback_id"] == ui.ASSIGN_DEVICES
        reply = bot.submit(ADMIN, view, {"serials": {"type": "plain_text_input",
                                                     "value": serial(3)}}, view["id"])  # fmt: skip
        assert "Sent to Apple" in json.dumps(reply.json()["view"])
        bot.wait_idle(lambda: any("Apple completed" in t for t in dm_texts(fake)), timeout=30)
        assert "Apple completed" in json.dumps(fake.views[view["id"]])
    finally:
        bot.stop()
    assert apple.devices_of("Jamf Pro") == [serial(1), serial(3)]
