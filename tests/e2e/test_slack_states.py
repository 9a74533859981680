"""One scenario per server state, through the real bot: every surface (App Home, `/mdm list`,
`/mdm show`, the alert channel) shows the same state word and the same single action."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.slack.sweeper import Sweeper
from tests.dep_client import mdm_server_installs, present_replaced
from tests.e2e.conftest import ADMIN
from tests.e2e.test_dep_feedback import renew_in_slack
from tests.e2e.test_slack_flows import buttons, connected_add, home
from tests.e2e.test_slack_guards import add_server
from tests.e2e.test_slack_lifecycle import posts
from tests.e2e.test_slack_mdm import _connection_values, _open_add, _renew_from_alert, active
from tests.fakemdm import FakeNanoDep
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

Setup = Callable[[Bot, FakeSlack, FakeNanoDep], str]
RESEND = "Send me the file again"


def in_use(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake, "school1"))
    return "school1"


def _twenty_days_before_expiry(bot: Bot) -> str:
    """The sweep posts the alert; the clock moves there."""
    at = active(bot)[0].expires_at - timedelta(days=20)
    assert Sweeper(bot.svc, post_interval=0).sweep(at).alerts_sent == 1
    bot.clock.now = at
    return "school1"


def expires_soon(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    in_use(bot, fake, nanodep)
    return _twenty_days_before_expiry(bot)


def expires_soon_connected(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    connected_add(bot, fake, nanodep)
    return _twenty_days_before_expiry(bot)


def waiting_for_upload(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    add_server(bot, fake, "school1")
    return "school1"


def installed(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    view = _open_add(bot, fake)
    bot.submit(ADMIN, view, _connection_values(nanodep.url, "school1"), view["id"])
    bot.wait_idle(lambda: "Installed" in json.dumps(fake.views[view["id"]]))
    return "school1"


def install_failing(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    connected_add(bot, fake, nanodep)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    _renew_from_alert(bot, fake)
    return "school1"


def old_token(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    creds = mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake, "school1"))
    renew_in_slack(bot, fake, "school1")
    present_replaced(bot.ctx, bot.svc, creds)
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    return "school1"


def expired(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    in_use(bot, fake, nanodep)
    at = active(bot)[0].expires_at + timedelta(hours=1)
    Sweeper(bot.svc, post_interval=0).sweep(at)
    bot.clock.now = at
    return "school1"


def no_token(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep) -> str:
    from tests import certs
    from tests.e2e.test_slack_add import add_values

    fake.fail_next("files.getUploadURLExternal", error="internal_error")
    view = _open_add(bot, fake)
    bot.submit(ADMIN, view, add_values(fake, "school1", certs.self_signed_rsa().pem), view["id"])
    bot.wait_idle(lambda: "didn't deliver" in json.dumps(fake.views[view["id"]]))
    return "school1"


# state: how to get there, its word, its one action, whether mdmbot installs its tokens
STATES: dict[str, tuple[Setup, str, str | None, bool]] = {
    "in use": (in_use, "in use", None, False),
    "expires soon": (expires_soon, "expires in 20 days", "Renew token", False),
    "expires soon, connected": (expires_soon_connected, "expires in 20 days", "Renew token", True),
    "waiting for upload": (waiting_for_upload, "waiting for upload", RESEND, False),
    "installed": (installed, "installed, waiting for first use", None, True),
    "install failing": (install_failing, "install failing", "Install again", True),
    "old token": (old_token, "still presents the replaced token", RESEND, False),
    "expired": (expired, "expired", "Renew token", False),
    "no token": (no_token, "no token yet", "Get token", False),
}


def _home_row(page: dict[str, Any], server_id: int) -> tuple[str, list[str]]:
    """The server's text and buttons on the Home (its row and, when waiting, its sentence)."""
    blocks = page["blocks"]
    index = next(i for i, b in enumerate(blocks) if b.get("block_id") == f"server:{server_id}")
    row = blocks[index]
    if row["type"] == "section":  # a healthy server: one line with its ⋯ menu
        return row["text"]["text"], []
    text = blocks[index - 1]["text"]["text"]
    return text, [e["text"]["text"] for e in row["elements"] if e["type"] == "button"]


@pytest.mark.parametrize("state", list(STATES))
def test_every_surface_shows_the_same_state_and_action(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep, state: str
) -> None:
    setup, word, action, connected = STATES[state]
    name = setup(bot, fake, nanodep)
    server_id = bot.svc.server_by_name(name).id
    home(bot, fake, f"Ev{state.replace(' ', '').replace(',', '')}")
    row, home_buttons = _home_row(fake.published_home[ADMIN], server_id)
    listed = json.dumps(bot.command(ADMIN, "list").json()["blocks"], ensure_ascii=False)
    shown_reply = bot.command(ADMIN, f"show {name}").json()
    shown = json.dumps(shown_reply["blocks"], ensure_ascii=False)

    for surface, text in (("home", row), ("list", listed), ("show", shown)):
        assert word in text, (surface, text)
    expected = [action] if action else []
    assert home_buttons == expected, row
    assert [label for label, _ in buttons(shown_reply)] == expected, shown

    channel = posts(fake)
    live = [m for m in channel if not m["text"].startswith("Superseded")]
    for message in channel:
        if message["text"].startswith("Superseded"):
            assert not buttons(message), "no live button on a superseded message"
    assert len(live) <= 1, "one live message per server"
    for message in live:
        labels = [label for label, _ in buttons(message)]
        assert labels in ([], expected), (labels, expected)

    everything = " ".join([row, listed, shown, *(json.dumps(m["blocks"]) for m in live)])
    if connected:
        assert "upload" not in everything and "file" not in everything, "mdmbot installs: no file"
    if state != "in use":
        assert "white_check_mark" not in everything and "✅ " not in everything
        assert "Done" not in everything, "no done before the first use"
