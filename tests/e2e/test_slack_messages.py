"""Scenarios: messages in the alert channel and the App Home stay true after every renewal."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.slack.sweeper import Sweeper
from core.tokens import issuance
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_slack_guards import add_server
from tests.e2e.test_slack_lifecycle import posts
from tests.fakeslack import FakeSlack
from tests.processes import bot_env, mdmbot_command
from tests.slack_harness import Bot


def token_of(bot: Bot, name: str = "Jamf Pro") -> issuance.TokenView:
    with bot.ctx.unit_of_work() as session:
        return next(
            t
            for t in issuance.list_tokens(session)
            if t.status == "active" and t.server_name == name
        )


def has_renew_button(message: dict[str, Any]) -> bool:
    return "renew_token" in json.dumps(message.get("blocks"))


def post_two_alerts(bot: Bot, fake: FakeSlack) -> Sweeper:
    """The 60- and 30-day alerts of Jamf Pro's token, each with a live button."""
    token = token_of(bot)
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(token.expires_at - timedelta(days=59)).alerts_sent == 1
    assert sweeper.sweep(token.expires_at - timedelta(days=29)).alerts_sent == 1
    alerts = posts(fake)
    assert len(alerts) == 2 and all(has_renew_button(a) for a in alerts)
    return sweeper


def open_home(bot: Bot, fake: FakeSlack, user: str, event_id: str) -> dict[str, Any]:
    published = len(fake.calls_to("views.publish"))
    bot.event({"type": "app_home_opened", "user": user, "tab": "home"}, event_id=event_id)
    bot.wait_idle(lambda: len(fake.calls_to("views.publish")) > published)
    return fake.published_home[user]


def test_renewal_from_the_app_home_edits_every_alert_at_once(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    sweeper = post_two_alerts(bot, fake)
    home = open_home(bot, fake, ADMIN, "EvHOME1")
    renew = next(
        e
        for b in home["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == "server_token"
    )
    opened = len(fake.calls_to("views.open"))
    bot.press(ADMIN, "server_token", renew["value"])
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    confirm = bot.opened_view()
    assert "The current token expires <!date^" in json.dumps(confirm)
    assert bot.submit(ADMIN, confirm, {}, view_id=confirm["id"]).status == 200

    bot.wait_idle(lambda: not any(has_renew_button(a) for a in posts(fake)))
    for alert in posts(fake):
        text = json.dumps(alert["blocks"])
        assert alert["text"] == "Renewed: Jamf Pro"
        assert f"<@{ADMIN}> renewed *Jamf Pro* <!date^" in text and "The new token expires" in text
    assert len(fake.calls_to("chat.update")) == 2, "each alert edited once"
    assert sweeper.sweep(token_of(bot).expires_at - timedelta(days=300)).messages_edited == 0
    assert len(fake.calls_to("chat.update")) == 2


def test_renewal_from_the_command_line_is_shown_at_the_next_sweep(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    add_server(bot, fake)
    sweeper = post_two_alerts(bot, fake)
    env = bot_env(fake, tmp_path, f"sqlite:///{tmp_path / 'bot.db'}")
    done = subprocess.run(
        [*mdmbot_command(), "token", "issue", "Jamf Pro", "--out", str(tmp_path / "t.p7m")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert all(has_renew_button(a) for a in posts(fake)), "Slack hears of it at the next sweep"

    report = sweeper.sweep(bot.clock())
    assert report.messages_edited == 2 and report.alerts_sent == 0
    for alert in posts(fake):
        assert not has_renew_button(alert)
        assert "(command line) renewed *Jamf Pro*" in json.dumps(alert["blocks"])
    assert sweeper.sweep(bot.clock() + timedelta(hours=1)).messages_edited == 0


def test_removing_a_server_edits_its_alerts(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    post_two_alerts(bot, fake)
    sid = bot.svc.server_by_name("Jamf Pro").id
    from bot.slack.builders import modals

    reply = bot.submit(
        ADMIN,
        {
            "callback_id": modals.CONFIRM_REMOVE,
            "private_metadata": bot.metadata({"server_id": sid}),
        },
        {},
    )
    assert "Removed" in reply.body
    bot.wait_idle(lambda: not any(has_renew_button(a) for a in posts(fake)))
    assert all(a["text"] == "Removed: Jamf Pro" for a in posts(fake))


def add_at(bot: Bot, fake: FakeSlack, name: str, days_ago: int) -> None:
    real = bot.clock.now
    bot.clock.now = real - timedelta(days=days_ago)
    try:
        add_server(bot, fake, name)
    finally:
        bot.clock.now = real


def section_texts(home: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in home["blocks"] if b["type"] == "section"]


def test_app_home_lists_checklists_then_expired_expiring_tokenless_healthy(
    bot: Bot, fake: FakeSlack
) -> None:
    add_at(bot, fake, "Healthy", 0)
    add_at(bot, fake, "Expired", 370)
    add_at(bot, fake, "Expiring", 355)
    fake.fail_next("files.getUploadURLExternal", error="internal_error")
    bot.command(ADMIN, "add")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) >= 4)
    from tests import certs
    from tests.e2e.test_slack_add import add_values

    view = bot.opened_view()
    bot.submit(ADMIN, view, add_values(fake, "Tokenless", certs.self_signed_rsa().pem), view["id"])
    bot.wait_idle(lambda: "didn't deliver" in json.dumps(fake.views[view["id"]]))
    bot.command(ADMIN, "password-changed")
    bot.wait_idle(lambda: len(posts(fake)) == 1)

    home = open_home(bot, fake, ADMIN, "EvHOME2")
    texts = section_texts(home)
    order = [
        next(i for i, t in enumerate(texts) if f"*{name}*" in t)
        for name in ("Expired", "Expiring", "Tokenless", "Healthy")
    ]
    assert order == sorted(order), texts
    assert "to renew" in texts[0] and "<#C0ALERTS>" in texts[0], "open checklists come first"
    assert f"Downloaded by <@{ADMIN}> <!date^" in texts[order[0]]
    buttons = {
        b["block_id"]: b["elements"]
        for b in home["blocks"]
        if b.get("block_id", "")[:7] == "server:"
    }
    primary = [els[0].get("style") == "primary" for els in buttons.values()]
    assert primary == [True, True, True, False], "only servers that need it get a primary button"
    for elements in buttons.values():
        assert elements[0]["text"]["text"] == "Renew token"
        assert [o["text"]["text"] for o in elements[1]["options"]] == [
            "Edit",
            "Replace certificate",
            "Remove",
        ]
    assert '"danger"' not in json.dumps(home), "danger only in confirmations"

    healthy = next(k for k, v in buttons.items() if v[0].get("style") is None)
    remove = next(o for o in buttons[healthy][1]["options"] if o["text"]["text"] == "Remove")
    opened = len(fake.calls_to("views.open"))
    bot.interactive(
        {
            "type": "block_actions",
            "team": {"id": "T0001"},
            "user": {"id": ADMIN, "username": "alex", "team_id": "T0001"},
            "api_app_id": "A0MDMBOT",
            "trigger_id": "9.9.overflow",
            "container": {"type": "view", "view_id": home["id"]},
            "actions": [
                {
                    "type": "overflow",
                    "action_id": "server_more",
                    "block_id": healthy,
                    "selected_option": remove,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
    )
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    assert "Remove *Healthy* from mdmbot?" in json.dumps(bot.opened_view())


def test_app_home_without_a_role_names_the_administrators(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    home = open_home(bot, fake, STRANGER, "EvHOME3")
    text = json.dumps(home)
    assert f"Ask an Administrator (<@{ADMIN}>)" in text and "/mdm grant" in text
    assert "Jamf Pro" not in text and "server_token" not in text
    assert f"Ask an Administrator (<@{ADMIN}>)" in bot.command(STRANGER, "help").body


def test_healthz_says_when_the_bot_is_not_in_the_alert_channel(bot: Bot, fake: FakeSlack) -> None:
    bot.wait_idle(lambda: bot.get("/healthz").json()["alert_channel"]["member"] is True)
    fake.add_channel("C0ALERTS", "mdm-alerts", member=False)
    bot.runtime.check_alert_channel()
    health = bot.get("/healthz").json()["alert_channel"]
    assert health == {
        "member": False,
        "detail": "not a member: invite the bot with /invite @mdmbot",
    }
