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
from bot.slack.builders import modals
from tests.dep_client import open_token, session_key
from tests.devices_support import csv_of, serial
from tests.e2e.conftest import ADMIN
from tests.e2e.test_cli import Cli, _valid_now
from tests.e2e.test_cli_api_accounts import _answers
from tests.e2e.test_slack_add import add_values
from tests.e2e.test_slack_devices import dm_texts, open_modal
from tests.fakeslack import FakeSlack
from tests.processes import BotProcess, ServeProcess, bot_env, free_port
from tests.slack_harness import Bot


@dataclass
class Apple:
    """The mdmbot that plays Apple: its operator's shell and the origin of its Apple port."""

    cli: Cli
    origin: str
    account: dict[str, str]
    key_file: Path
    business: dict[str, str]

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
    business = cli.json("api-account", "create", "abm", "--key-out", "abm.pem",
                        "--scope", "business")  # fmt: skip
    dep_port, port = free_port(), free_port()
    process = BotProcess(
        cli.env, tmp_path / "apple.log", "serve", "--no-slack", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(free_port()),
        "--dep-host", "127.0.0.1", "--dep-port", str(dep_port),
    )  # fmt: skip
    try:
        process.wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        yield Apple(cli, f"http://127.0.0.1:{dep_port}", account, cli.work / "asm.pem", business)
    finally:
        assert process.terminate() == 0


def _apple_settings(apple: Apple, business: bool = False) -> dict[str, str]:
    account = apple.business if business else apple.account
    return {
        "MDMBOT_APPLE_API": "business" if business else "school",
        "MDMBOT_APPLE_CLIENT_ID": account["client_id"],
        "MDMBOT_APPLE_KEY_ID": account["key_id"],
        "MDMBOT_APPLE_KEY_FILE": str(apple.cli.work / ("abm.pem" if business else "asm.pem")),
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
    # Jamf's MDM server talks to "Apple" with its token: the next sync brings the time in.
    token = next(apple.cli.work.glob("Jamf_Pro_Token_*_smime.p7m")).read_bytes()
    session_key(apple.origin, open_token(token, _valid_now(0, "mdm.example.edu").key_pem))
    assert school.json("apple", "sync", "--json")["changes"] == 1
    connected = school.json("server", "show", "Jamf Pro", "--json")["apple"]["last_connected_at"]
    assert connected and connected.endswith("Z")

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


def test_linking_a_server_in_school_and_in_business(
    apple: Apple, fake: FakeSlack, tmp_path: Path
) -> None:
    school = Cli(tmp_path / "school")
    school.env.update(_apple_settings(apple), MDMBOT_SECRET_KEY="k" * 40)
    school.ok("db", "upgrade")
    (school.work / "kandji.pem").write_bytes(_valid_now(7, "kandji.example.edu").pem)
    added = school.ok("server", "add", "Kandji", "--cert", "kandji.pem")
    assert "Apple School Manager has no API to add it" in added
    assert "Name it exactly “Kandji”" in added and "kandji.pem" in added
    assert added.rstrip().endswith('`mdmbot token import "Kandji" FILE`.')
    assert school.json("server", "show", "Kandji", "--json")["apple"]["id"] is None
    # The person adds it in "Apple School Manager"; the next sync links it by name.
    (apple.cli.work / "kandji.pem").write_bytes((school.work / "kandji.pem").read_bytes())
    apple.cli.ok("server", "add", "Kandji", "--cert", "kandji.pem")
    assert school.json("apple", "sync", "--json")["servers"] == 3
    linked = school.json("server", "show", "Kandji", "--json")
    assert len(linked["apple"]["id"]) == 32 and linked["created_by"].startswith("operator:")
    assert len(school.json("server", "list", "--json")) == 3

    # The school's Slack: /mdm add answers with the steps and the certificate by DM.
    bot = Bot(fake, f"sqlite:///{school.data_dir / 'mdmbot.db'}", str(school.data_dir),
              extra_env={k.lower(): v for k, v in _apple_settings(apple).items()})  # fmt: skip
    try:
        bot.grant(ADMIN)
        bot.command(ADMIN, "add")
        bot.wait_idle(lambda: bool(fake.calls_to("views.open")))
        view = fake.calls_to("views.open")[0].params["view"]
        cert = _valid_now(8, "mosyle.example.edu").pem
        reply = bot.submit(ADMIN, view, add_values(fake, "Lab Macs", cert))
        assert "Linking the server with Apple" in json.dumps(reply.json()["view"])
        bot.wait_idle(lambda: any("Download Token" in t for t in dm_texts(fake)))
        assert view["callback_id"] == modals.ADD_SERVER
        assert [u["filename"] for u in fake.uploads] == ["Lab_Macs_certificate.pem"]
        assert fake.uploads[0]["bytes"].startswith(b"-----BEGIN CERTIFICATE-----")
        text = next(t for t in dm_texts(fake) if "Download Token" in t)
        assert "Name it exactly “Lab Macs”" in text and "/mdm token Lab Macs" in text
    finally:
        bot.stop()

    business = Cli(tmp_path / "business")
    business.env.update(_apple_settings(apple, business=True), MDMBOT_SECRET_KEY="k" * 40)
    business.ok("db", "upgrade")
    created = business.ok("server", "add", "Fleet", "--cert", "../../school/work/kandji.pem")
    assert created.startswith("Created “Fleet” in Apple Business (id ")
    assert "Next: on “Fleet” in Apple Business choose Download Token" in created
    assert "School Manager" not in created and "Business Manager" not in created
    assert [s["name"] for s in apple.cli.json("server", "list", "--json")] == [
        "Fleet", "Jamf Pro", "Kandji", "Mosyle"]  # fmt: skip
    synced = business.json("apple", "sync", "--json")
    assert (synced["servers"], synced["changes"]) == (4, 3 + 4), "3 more servers, 4 devices"

    # The business's Slack: /mdm add creates the server at Apple, in Apple Business's words.
    settings = {k.lower(): v for k, v in _apple_settings(apple, business=True).items()}
    bot = Bot(fake, f"sqlite:///{business.data_dir / 'mdmbot.db'}", str(business.data_dir),
              extra_env=settings)  # fmt: skip
    try:
        bot.grant(ADMIN)
        bot.command(ADMIN, "add")
        bot.wait_idle(lambda: len(fake.calls_to("views.open")) > 1)
        view = fake.calls_to("views.open")[-1].params["view"]
        assert "removes a device from Apple Business for good" in json.dumps(view)
        assert "School Manager" not in json.dumps(view)
        cert = _valid_now(9, "fleet.example.com").pem
        bot.submit(ADMIN, view, add_values(fake, "Lab Fleet", cert))
        bot.wait_idle(lambda: any("*Lab Fleet*" in t for t in dm_texts(fake)))
        text = next(t for t in dm_texts(fake) if "*Lab Fleet*" in t)
        assert text.startswith(":white_check_mark: Created *Lab Fleet* in Apple Business and")
        assert "Next: on “Lab Fleet” in Apple Business choose Download Token" in text
        assert "School Manager" not in text and "Business Manager" not in text
    finally:
        bot.stop()


def test_serve_syncs_at_start(
    apple: Apple, fake: FakeSlack, tmp_path: Path
) -> None:
    school = Cli(tmp_path / "school")
    env = bot_env(fake, school.data_dir, **_apple_settings(apple))
    process = ServeProcess(env, tmp_path / "school.log")
    try:
        process.wait_ready()
        school.env.update(MDMBOT_SECRET_KEY="k" * 40)
        process.wait_until(lambda: '"Mosyle"' in school.run("server", "list", "--json").stdout)
    finally:
        assert process.terminate() == 0
    names = [s["name"] for s in school.json("server", "list", "--json")]
    assert names == ["Jamf Pro", "Mosyle"]
