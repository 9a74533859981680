"""Scenarios: messages in the alert channel and the App Home stay true after every renewal."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.slack.sweeper import Sweeper
from core.people import rotation
from core.people.rotation import CaseView
from core.tokens import issuance
from tests.dep_client import mdm_server_installs
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_slack_guards import add_server
from tests.e2e.test_slack_lifecycle import posts
from tests.fakeslack import FakeSlack
from tests.processes import bot_env, run_cli
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


SUPERSEDED = "Superseded: the newer message about *Jamf Pro* below says what is left."


def post_two_alerts(bot: Bot, fake: FakeSlack) -> Sweeper:
    """The 60- and 30-day alerts of Jamf Pro's token: the newer one live, the older superseded."""
    token = token_of(bot)
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(token.expires_at - timedelta(days=59)).alerts_sent == 1
    assert has_renew_button(posts(fake)[0])
    assert sweeper.sweep(token.expires_at - timedelta(days=29)).alerts_sent == 1
    older, newer = posts(fake)
    assert older["text"] == SUPERSEDED and not has_renew_button(older), "one live message"
    assert "actions" not in json.dumps(older["blocks"]) and has_renew_button(newer)
    return sweeper


def open_home(bot: Bot, fake: FakeSlack, user: str, event_id: str) -> dict[str, Any]:
    published = len(fake.calls_to("views.publish"))
    bot.event({"type": "app_home_opened", "user": user, "tab": "home"}, event_id=event_id)
    bot.wait_idle(lambda: len(fake.calls_to("views.publish")) > published)
    return fake.published_home[user]


def test_renewed_alerts_say_what_is_left_until_the_new_token_is_in_use(
    bot: Bot, fake: FakeSlack
) -> None:
    mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake))
    sweeper = post_two_alerts(bot, fake)
    home = open_home(bot, fake, ADMIN, "EvHOME1")
    assert "renew_token" not in json.dumps(home) and "Waiting on you" not in json.dumps(home)
    renew = next(
        o
        for b in home["blocks"]
        if b.get("accessory", {}).get("type") == "overflow"
        for o in b["accessory"]["options"]
        if o["value"].startswith("server_token:")
    )
    assert renew["text"]["text"] == "Renew token", "a healthy server's Renew is in its ⋯ menu"
    opened = len(fake.calls_to("views.open"))
    bot.press(ADMIN, "server_token", renew["value"].partition(":")[2])
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    confirm = bot.opened_view()
    assert "The current token expires <!date^" in json.dumps(confirm)
    assert bot.submit(ADMIN, confirm, {}, view_id=confirm["id"]).status == 200

    bot.wait_idle(lambda: not any(has_renew_button(a) for a in posts(fake)))
    assert posts(fake)[0]["text"] == SUPERSEDED
    for alert in posts(fake)[1:]:
        text = json.dumps(alert["blocks"], ensure_ascii=False)
        assert alert["text"] == "Renewed: Jamf Pro — waiting for upload"
        assert f"Renewed by <@{ADMIN}> <!date^" in text
        assert f"the new token is waiting for upload (in <@{ADMIN}>'s DMs)" in text
        assert "The old token stopped working, so it cannot enrol or sync devices" in text
        assert "nothing is left to do" not in text and "Send me the file again" in text
        assert f"Only <@{ADMIN}> can get the file again" in text
    assert len(fake.calls_to("chat.update")) == 2, "superseded once, renewed once"
    assert sweeper.sweep(token_of(bot).expires_at - timedelta(days=300)).messages_edited == 0
    assert len(fake.calls_to("chat.update")) == 3, "the day's reminder supersedes the alert"
    assert posts(fake)[1]["text"] == SUPERSEDED and not has_renew_button(posts(fake)[1])

    new_token, uploads = str(token_of(bot).id), len(fake.uploads)
    bot.press(STRANGER, "resend_token", new_token)
    bot.wait_idle(lambda: bool(fake.messages_in(fake.dm_channel_for(STRANGER))))
    [refusal] = fake.messages_in(fake.dm_channel_for(STRANGER))
    assert "Only the person who downloaded this token" in refusal["text"]
    assert len(fake.uploads) == uploads, "nothing sent to someone else"
    bot.press(ADMIN, "resend_token", new_token)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    assert fake.uploads[-1]["filename"] == fake.uploads[-2]["filename"], "the same token again"

    mdm_server_installs(bot.ctx, bot.svc, fake.uploads[-1])
    # the two expiry alerts, and the sweep's reminder that the new token was not uploaded yet
    assert len(posts(fake)) == 3
    bot.wait_idle(lambda: posts(fake)[2]["text"] == "Renewed and in use: Jamf Pro")
    assert [a["text"] for a in posts(fake)[:2]] == [SUPERSEDED] * 2, "only the newest is live"
    for alert in posts(fake)[2:]:
        text = json.dumps(alert["blocks"], ensure_ascii=False)
        assert "*Jamf Pro*: in use since <!date^" in text and "nothing is left" in text
        assert f":white_check_mark: Renewed by <@{ADMIN}> <!date^" in text
        assert "Send me" not in text
    assert len(fake.calls_to("chat.update")) == 4, "the live one edited once more at first use"


def test_renewal_from_the_command_line_is_shown_at_the_next_sweep(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    add_server(bot, fake)
    sweeper = post_two_alerts(bot, fake)
    env = bot_env(fake, tmp_path, f"sqlite:///{tmp_path / 'bot.db'}")
    done = run_cli(["token", "issue", "Jamf Pro", "--out", str(tmp_path / "t.p7m")], env=env)
    assert done.returncode == 0, done.stderr
    assert has_renew_button(posts(fake)[1]), "Slack hears of it at the next sweep"

    report = sweeper.sweep(bot.clock())
    assert report.messages_edited == 1 and report.alerts_sent == 0, "the live alert"
    assert posts(fake)[0]["text"] == SUPERSEDED
    for alert in posts(fake)[1:]:
        assert not has_renew_button(alert)
        text = json.dumps(alert["blocks"], ensure_ascii=False)
        assert "Renewed by " in text and " on the command line <!date^" in text
        assert "waiting for upload (saved by " in text and "on the command line)" in text
        assert "Send me the file again" not in text
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
    assert [a["text"] for a in posts(fake)] == [SUPERSEDED, "Removed: Jamf Pro"]


def add_at(bot: Bot, fake: FakeSlack, name: str, days_ago: int) -> None:
    real = bot.clock.now
    bot.clock.now = real - timedelta(days=days_ago)
    try:
        add_server(bot, fake, name)
    finally:
        bot.clock.now = real


def open_cases(bot: Bot) -> list[CaseView]:
    with bot.ctx.unit_of_work(readonly=True) as session:
        return rotation.open_cases(session)


def section_texts(home: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in home["blocks"] if b["type"] == "section"]


def renew(bot: Bot, fake: FakeSlack, name: str) -> None:
    opened, uploads = len(fake.calls_to("views.open")), len(fake.uploads)
    bot.command(ADMIN, f"token {name}")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    view = bot.opened_view()
    bot.submit(ADMIN, view, {}, view_id=view["id"])
    bot.wait_idle(lambda: len(fake.uploads) > uploads)


def test_app_home_puts_a_replaced_token_first_with_one_button_per_state(
    bot: Bot, fake: FakeSlack
) -> None:
    add_at(bot, fake, "Healthy", 0)
    add_at(bot, fake, "Expired", 370)
    add_at(bot, fake, "Expiring", 355)
    mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake, "Replaced"))
    renew(bot, fake, "Replaced")
    fake.fail_next("files.getUploadURLExternal", error="internal_error")
    opened = len(fake.calls_to("views.open"))
    bot.command(ADMIN, "add")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    from tests import certs
    from tests.e2e.test_slack_add import add_values

    view = bot.opened_view()
    bot.submit(ADMIN, view, add_values(fake, "Tokenless", certs.self_signed_rsa().pem), view["id"])
    bot.wait_idle(lambda: "didn't deliver" in json.dumps(fake.views[view["id"]]))
    bot.command(ADMIN, "password-changed")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    bot.wait_idle(lambda: all(case.channel for case in open_cases(bot)))  # recorded after posting

    home = open_home(bot, fake, ADMIN, "EvHOME2")
    texts = section_texts(home)
    names = ("Expired", "Replaced", "Expiring", "Healthy", "Tokenless")
    order = [next(i for i, t in enumerate(texts) if f"*{name}*" in t) for name in names]
    assert order == sorted(order), texts
    assert "to renew" in texts[0] and "<#C0ALERTS>" in texts[0], "open checklists come first"
    assert texts[1] == "*Waiting on you (5)*"
    assert texts[order[0]].startswith("🔴 *Expired*: token expired <!date^")
    assert texts[order[2]].startswith("🟡 *Expiring*: token expires in 10 days (<!date^")
    assert texts[order[1]].startswith(
        f"🟡 *Replaced*: the new token is waiting for upload (in <@{ADMIN}>'s DMs). The old "
        "token stopped working, so it cannot enrol or sync devices until then."
    ), "minutes after the renewal: not red yet, but before servers whose token still works"
    assert f"<@{ADMIN}> uploads the new token file to the MDM server" in texts[order[1]]
    assert texts[order[3]].startswith("🟡 *Healthy*: the new token is waiting for upload")
    assert "stopped" not in texts[order[3]], "a first token replaced nothing"
    assert texts[order[4]].startswith("🟡 *Tokenless* has no token yet")
    assert all(len(t) < 400 for t in texts), "short enough for a phone"
    ids = {name: bot.svc.server_by_name(name).id for name in names}
    buttons = {
        name: next(b["elements"] for b in home["blocks"] if b.get("block_id") == f"server:{i}")
        for name, i in ids.items()
    }
    shown = {name: (els[0]["text"]["text"], els[0].get("style")) for name, els in buttons.items()}
    assert shown == {
        "Expired": ("Renew token", "primary"),
        "Replaced": ("Send me the file again", None),
        "Expiring": ("Renew token", None),
        "Healthy": ("Send me the file again", None),
        "Tokenless": ("Get token", None),
    }, "one primary button: the most urgent server's"
    assert [o["text"]["text"] for o in buttons["Replaced"][1]["options"]] == [
        "Renew token",
        "Edit",
        "Replace certificate",
        "Remove",
    ]
    assert [o["text"]["text"] for o in buttons["Expired"][1]["options"]] == [
        "Edit",
        "Replace certificate",
        "Remove",
    ]
    assert '"danger"' not in json.dumps(home), "danger only in confirmations"
    listed = bot.command(ADMIN, "list").json()
    lines = json.dumps(listed, ensure_ascii=False)
    assert [lines.index(f"*{name}*") for name in names] == sorted(
        lines.index(f"*{name}*") for name in names
    ), "/mdm list in the Home's order"
    assert "🔴 cannot enrol, or soon won't" in lines, "a key to the colours"

    healthy = f"server:{ids['Healthy']}"
    remove = next(o for o in buttons["Healthy"][1]["options"] if o["text"]["text"] == "Remove")
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


def test_a_failed_delivery_after_add_says_the_server_is_tokenless_and_offers_get_token(
    bot: Bot, fake: FakeSlack
) -> None:
    from tests import certs
    from tests.e2e.test_slack_add import add_values

    fake.fail_next("files.getUploadURLExternal", error="internal_error")
    bot.command(ADMIN, "add")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) >= 1)
    view = bot.opened_view()
    bot.submit(ADMIN, view, add_values(fake, "Tokenless", certs.self_signed_rsa().pem), view["id"])
    dm = fake.dm_channel_for(ADMIN)
    bot.wait_idle(lambda: any("Get token" in json.dumps(m) for m in fake.messages_in(dm)))
    [told] = [m for m in fake.messages_in(dm) if "Get token" in json.dumps(m)]
    assert "*Tokenless* is linked but has no token yet" in told["text"]
    assert "no new token was issued" not in told["text"]
    [get] = [e for b in told["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert get["text"]["text"] == "Get token" and get["value"] == str(
        bot.svc.server_by_name("Tokenless").id
    )
    opened = len(fake.calls_to("views.open"))
    bot.press(ADMIN, get["action_id"], get["value"])
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    confirm = bot.opened_view()
    assert confirm["title"]["text"] == "Get server token"
    assert confirm["submit"]["text"] == "Get token"
    uploads = len(fake.uploads)
    bot.submit(ADMIN, confirm, {}, view_id=confirm["id"])
    bot.wait_idle(lambda: bot.svc.server_by_name("Tokenless").token_id is not None)
    assert len(fake.uploads) == uploads + 1


def test_app_home_without_a_role_names_the_administrators(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    home = open_home(bot, fake, STRANGER, "EvHOME3")
    text = json.dumps(home)
    assert f"Ask an Administrator (<@{ADMIN}>)" in text and "/mdm grant" in text
    assert "Jamf Pro" not in text and "server_token" not in text
    assert f"Ask an Administrator (<@{ADMIN}>)" in bot.command(STRANGER, "help").body

    left = "ULEFT0001"
    fake.add_user(left, "robin", "robin@school.example")
    bot.grant(left)
    bot.svc.remember(left, "robin")
    gone = {"id": left, "name": "robin", "deleted": True, "profile": {}}
    bot.event({"type": "user_change", "user": gone, "event_ts": "1.0"}, event_id="EvLEFT")
    bot.wait_idle(lambda: _deactivated(bot, left))
    text = json.dumps(open_home(bot, fake, STRANGER, "EvHOME4"))
    assert f"<@{ADMIN}>" in text and f"<@{left}>" not in text, "never one who left"
    assert f"<@{left}>" not in bot.command(STRANGER, "help").body


def _deactivated(bot: Bot, user: str) -> bool:
    from core.models import Person

    with bot.ctx.unit_of_work(readonly=True) as session:
        person = session.get(Person, user)
        return person is not None and person.deactivated_at is not None


def test_healthz_says_when_the_bot_is_not_in_the_alert_channel(bot: Bot, fake: FakeSlack) -> None:
    bot.wait_idle(lambda: bot.get("/healthz").json()["alert_channel"]["member"] is True)
    fake.add_channel("C0ALERTS", "mdm-alerts", member=False)
    bot.runtime.check_alert_channel()
    health = bot.get("/healthz").json()["alert_channel"]
    assert health == {
        "member": False,
        "detail": "not a member: invite the bot with /invite @mdmbot",
    }


def test_help_groups_commands_by_task_one_plain_line_each(bot: Bot, fake: FakeSlack) -> None:
    text = bot.command(ADMIN, "help").json()["blocks"][0]["text"]["text"]
    headings = [line for line in text.splitlines() if line.startswith("*") and line.endswith("*")]
    assert headings == [
        "*Your own password*",
        "*See what there is*",
        "*Servers and tokens*",
        "*When someone leaves*",
        "*Devices*",
        "*Roles*",
    ]
    commands = [line for line in text.splitlines() if line.startswith("`/mdm")]
    assert len(commands) == 18 and all(" — " in line for line in commands), commands
    assert "`/mdm token NAME` — renew a server's token, or get its first one" in commands
    assert "*Home* tab" in text and "```" not in text
    stranger = bot.command(STRANGER, "help").json()["blocks"][0]["text"]["text"]
    assert "`/mdm password-changed`" in stranger and "/mdm grant" not in stranger
