"""The real `mdmbot serve` process over Socket Mode, against the fake's WebSocket."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bot.slack.builders import modals
from tests.dep_client import call
from tests.e2e.conftest import ADMIN
from tests.fakeslack import FakeSlack
from tests.processes import BotProcess, bot_env, free_port, mdmbot_command


def command(fake: FakeSlack, user: str, text: str, trigger: str) -> dict[str, Any]:
    """The payload of a `slash_commands` envelope: the command's form fields, as JSON."""
    return {
        "token": "deprecated",
        "team_id": fake.team_id,
        "team_domain": "school",
        "channel_id": "C0GENERAL",
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/mdm",
        "text": text,
        "api_app_id": "A0FAKE",
        "is_enterprise_install": "false",
        "response_url": fake.response_url(trigger),
        "trigger_id": f"{trigger}.{int(time.time())}.trigger",
    }


def test_serve_over_socket_mode_acks_commands_opens_modals_and_stops_on_sigterm(
    fake: FakeSlack, tmp_path: Path
) -> None:
    dep = f"http://127.0.0.1:{free_port()}"
    env = bot_env(
        fake,
        tmp_path,
        SLACK_APP_TOKEN=fake.app_token,
        MDMBOT_ADMINS=ADMIN,
        MDMBOT_DEP_HOST="127.0.0.1",
        MDMBOT_DEP_PORT=dep.rsplit(":", 1)[1],
    )
    del env["SLACK_SIGNING_SECRET"]  # not needed without --http
    bot = BotProcess(env, tmp_path / "serve.log", "serve")
    try:
        bot.wait_until(fake.socket_connected)
        opened = fake.calls_to("apps.connections.open")
        assert [c.token for c in opened] == [fake.app_token]

        sent = time.monotonic()
        ack = fake.socket_ack(fake.socket_send("slash_commands", command(fake, ADMIN, "help", "1")))
        assert time.monotonic() - sent < 3
        help_blocks = ack["payload"]["blocks"]
        context = [e["text"] for b in help_blocks if b["type"] == "context" for e in b["elements"]]
        assert "Your role: *Administrator*." in context, "MDMBOT_ADMINS granted the role"

        add = command(fake, ADMIN, "add", "2")
        fake.socket_ack(fake.socket_send("slash_commands", add))
        fake.wait_for(lambda: bool(fake.calls_to("views.open")))
        opened_view = fake.calls_to("views.open")[0].params
        assert opened_view["trigger_id"] == add["trigger_id"]
        assert opened_view["view"]["callback_id"] == modals.ADD_SERVER == "add_server"

        # The device assignment service answers on its own port in Socket Mode too.
        assert call(f"{dep}/session", {}, user_agent=None)[:2] == (400, "USER_AGENT_MISSING")
        assert call(f"{dep}/session", {})[:2] == (400, "OAUTH_HEADER_MISSING")
    finally:
        started = time.monotonic()
        code = bot.terminate(timeout=10)
    assert code == 0 and time.monotonic() - started < 10, bot.log()
    fake.wait_for(lambda: not fake.socket_connected(), timeout=2)
    assert "Traceback" not in bot.log()
    assert fake.bot_token not in bot.log() and fake.app_token not in bot.log()


def test_a_bot_token_as_app_token_stops_start_up_with_one_line(
    fake: FakeSlack, tmp_path: Path
) -> None:
    env = bot_env(fake, tmp_path, SLACK_APP_TOKEN=fake.bot_token)
    result = subprocess.run(
        [*mdmbot_command(), "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if line.startswith("mdmbot:")]
    assert (
        refusals
        == [result.stderr.strip().splitlines()[-1]]
        == [
            "mdmbot: Slack refused SLACK_APP_TOKEN for Socket Mode (not_allowed_token_type); "
            "it must be an app-level token (xapp-…) with the connections:write scope."
        ]
    )
    assert fake.bot_token not in result.stderr
    assert [c.token for c in fake.calls_to("apps.connections.open")] == [fake.bot_token]
