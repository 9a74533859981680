"""The seven flows that misled people (issue 31), each driven through the real bot: signed
requests, the fake Slack, a fake NanoDEP and a moving clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bot.slack.builders import modals
from bot.slack.sweeper import Sweeper
from core.roles import Role
from tests import certs
from tests.dep_client import mdm_server_installs
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_add import add_values
from tests.e2e.test_slack_guards import add_server
from tests.e2e.test_slack_lifecycle import posts, press_on, thread_replies
from tests.e2e.test_slack_mdm import (
    _alert,
    _connection_values,
    _open_add,
    _renew_from_alert,
    _use,
    active,
    show,
)
from tests.fakemdm import FakeNanoDep
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

LEAVER = "ULEAVER01"


def connected_add(bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep, **fields: Any) -> None:
    """`/mdm add` school1 with a NanoDEP connection; its first token is installed, then used."""
    view = _open_add(bot, fake)
    bot.submit(ADMIN, view, _connection_values(nanodep.url, "school1", **fields), view["id"])
    bot.wait_idle(lambda: "Installed" in json.dumps(fake.views[view["id"]]))
    _use(bot, nanodep.tokens["school1"])


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, action id) of every button in a message."""
    found = []
    for block in message.get("blocks") or []:
        elements = block.get("elements", []) if block["type"] == "actions" else []
        found += [(e["text"]["text"], e["action_id"]) for e in elements if e["type"] == "button"]
    return found


def home(bot: Bot, fake: FakeSlack, event_id: str) -> str:
    """The App Home as ADMIN sees it now (its blocks, as text)."""
    published = len(fake.calls_to("views.publish"))
    bot.event({"type": "app_home_opened", "user": ADMIN, "tab": "home"}, event_id=event_id)
    bot.wait_idle(lambda: len(fake.calls_to("views.publish")) > published)
    return json.dumps(fake.published_home[ADMIN]["blocks"], ensure_ascii=False)


def test_installed_token_reminder_never_says_upload(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    connected_add(bot, fake, nanodep)
    _renew_from_alert(bot, fake)
    puts = sum(1 for c in nanodep.calls if c.method == "PUT")
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock() + timedelta(hours=25))
    [reminder] = [m for m in posts(fake) if "reminds once a day" in json.dumps(m["blocks"])]
    assert reminder["text"] == "school1: installed, waiting for first use"
    text = json.dumps(reminder["blocks"], ensure_ascii=False)
    assert "installed in NanoDEP (school1) <!date^" in text
    for word in ("upload", "file", "Send me", "DMs"):
        assert word not in text, word
    assert buttons(reminder) == [("Install again", "install_again")]

    dm = fake.dm_channel_for(ADMIN)
    told = len(fake.messages_in(dm))
    container = {"type": "message", "message_ts": reminder["ts"], "channel_id": "C0ALERTS"}
    value = reminder["blocks"][2]["elements"][0]["value"]
    bot.press(ADMIN, "install_again", value, container=container, message=reminder)
    bot.wait_idle(lambda: len(fake.messages_in(dm)) > told)
    assert "Installed the token for *school1* in NanoDEP (school1)" in (
        fake.messages_in(dm)[-1]["text"]
    )
    assert sum(1 for c in nanodep.calls if c.method == "PUT") == puts + 1, "pushed once more"


def test_home_after_successful_install_not_red(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    connected_add(bot, fake, nanodep)
    _renew_from_alert(bot, fake)
    now = home(bot, fake, "EvFlow2a")
    assert "⚪️ *school1* — installed, waiting for first use · expires <!date^" in now
    for wrong in ("🔴 *", "🟡 *", "Waiting on you", "Send me the file", "resend_token", "upload"):
        assert wrong not in now, wrong
    assert "installed, waiting for first use" in show(bot)
    bot.clock.now += timedelta(days=2)
    later = home(bot, fake, "EvFlow2b")
    assert "*Waiting on you (1)*" in later and "🟡 *school1*: installed in NanoDEP" in later
    assert '"Install again"' in later and "resend_token" not in later and "upload" not in later


def test_connected_expiry_alert_says_mdmbot_installs(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    connected_add(bot, fake, nanodep)
    token = active(bot)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(token.expires_at - timedelta(days=29)).alerts_sent == 1
    alert = _alert(fake)
    assert "mdmbot installs it into NanoDEP (school1) straight away" in alert
    assert f"Connected by <@{ADMIN}>" in alert
    for wrong in ("upload", "DMs a new token", "Downloaded by"):
        assert wrong not in alert, wrong
    assert buttons(posts(fake)[-1]) == [("Renew token", "renew_token")]


def _add_as_leaver(bot: Bot, fake: FakeSlack, name: str, count: int) -> None:
    uploads = len(fake.uploads)
    values = add_values(fake, name, certs.self_signed_rsa().pem)
    bot.submit(LEAVER, {"callback_id": modals.ADD_SERVER}, values)
    bot.wait_idle(lambda: len(fake.uploads) > uploads and len(active(bot)) == count)


def _file_of(fake: FakeSlack, name: str) -> dict[str, Any]:
    """The latest token file DM'd for a server."""
    return [u for u in fake.uploads if u["filename"].startswith(name)][-1]


def _rotate(bot: Bot, fake: FakeSlack, checklist: dict[str, Any], name: str) -> None:
    """Press "Renew token" on the checklist line of `name` and confirm."""
    current = next(m for m in posts(fake) if m["ts"] == checklist["ts"])
    value = next(
        b["accessory"]["value"]
        for b in current["blocks"]
        if b.get("accessory", {}).get("action_id") == "rotate_token"
        and f"*{name}*" in b["text"]["text"]
    )
    uploads = len(fake.uploads)
    press_on(bot, fake, ADMIN, current, "rotate_token", value)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)


def test_offboarding_reminder_counts_open_items_and_closes(bot: Bot, fake: FakeSlack) -> None:
    fake.add_user(LEAVER, "lee", "lee@school.example")
    bot.grant(LEAVER)
    for count, name in enumerate(("school1", "school2", "school3"), start=1):
        _add_as_leaver(bot, fake, name, count)
    bot.command(ADMIN, f"offboard <@{LEAVER}|lee>")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    checklist, start = posts(fake)[0], bot.clock()
    _rotate(bot, fake, checklist, "school1")
    _rotate(bot, fake, checklist, "school2")

    def current() -> str:
        return json.dumps(next(m for m in posts(fake) if m["ts"] == checklist["ts"])["blocks"])

    bot.wait_idle(lambda: current().count("waiting for upload") == 2)
    bot.wait_idle(lambda: posts(fake)[0]["text"].endswith("— renew 1 server token"))
    assert "*1 token to renew*" in home(bot, fake, "EvFlow4"), "the Home counts the same way"
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(start + timedelta(hours=25)).checklists_posted == 1
    [reminder] = thread_replies(fake, checklist)
    assert "1 server token downloaded by <@ULEAVER01> still needs renewing: *school3*" in (
        reminder["text"]
    )
    assert "*school1* is renewed, waiting for upload" in reminder["text"]
    assert "3 server tokens" not in reminder["text"] and "2 server tokens" not in reminder["text"]

    def reminder_now() -> str:
        return str(next(m for m in posts(fake) if m["ts"] == reminder["ts"])["text"])

    mdm_server_installs(bot.ctx, bot.svc, _file_of(fake, "school1"))
    bot.wait_idle(lambda: "school1" not in reminder_now())
    assert "still needs renewing: *school3*" in reminder_now(), "edited with the checklist"
    assert "*school2* is renewed, waiting for upload" in reminder_now()

    _rotate(bot, fake, checklist, "school3")
    mdm_server_installs(bot.ctx, bot.svc, _file_of(fake, "school2"))
    mdm_server_installs(bot.ctx, bot.svc, _file_of(fake, "school3"))
    bot.wait_idle(lambda: "Done" in current())
    bot.wait_idle(lambda: reminder_now().startswith(":white_check_mark: Done"))
    assert "renewing" not in reminder_now(), "closed with the checklist"
    assert sweeper.sweep(start + timedelta(hours=49)).checklists_posted == 0
    assert len(thread_replies(fake, checklist)) == 1


def test_failed_install_dm_says_old_token_stopped(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    connected_add(bot, fake, nanodep)
    uploads = len(fake.uploads)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    _renew_from_alert(bot, fake)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    comment = str(fake.uploads[-1]["initial_comment"])
    assert comment.startswith(
        ":warning: *school1*: install failing — installing into NanoDEP (school1) failed "
        "once: 500 from NanoDEP (school1): database is locked."
    ), comment
    assert "The old token stopped working, so it cannot enrol or sync devices" in comment
    assert "mdmbot tries again <!date^" in comment and "*Install again* tries now" in comment
    assert "Or upload this file to the MDM server yourself" in comment
    assert "Apple School Manager" not in comment


def test_first_token_dm_does_not_send_people_to_asm(bot: Bot, fake: FakeSlack) -> None:
    upload = add_server(bot, fake)
    comment = str(upload["initial_comment"])
    assert "Apple School Manager" not in comment
    assert "then give it devices with `/mdm assign Jamf Pro`" in comment
    opened = len(fake.calls_to("views.open"))
    bot.command(ADMIN, "remove Jamf Pro")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    modal = json.dumps(bot.opened_view(), ensure_ascii=False)
    assert "reassigned there" not in modal and "Apple School Manager" not in modal
    assert "mdmbot moves its devices to the default server for their kind" in modal


def test_failed_auto_renewal_has_button_and_says_cannot_enrol(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    auto = {modals.AUTO_RENEW: {"type": "number_input", "value": "90"}}
    connected_add(bot, fake, nanodep, **auto)
    token, sweeper = active(bot)[0], Sweeper(bot.svc, post_interval=0)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    at = token.expires_at - timedelta(days=89)
    assert sweeper.sweep(at).renewed == 1
    [notice] = posts(fake)
    assert notice["text"].startswith(
        ":warning: Renewed the token for *school1* automatically but couldn't install it in "
        "NanoDEP (school1): 500 from NanoDEP (school1): database is locked."
    )
    assert "The old token stopped working, so it cannot enrol or sync devices" in notice["text"]
    assert buttons(notice) == [("Install again", "install_again")]

    assert sweeper.sweep(at + timedelta(minutes=6)).installs_tried == 1
    bot.wait_idle(lambda: "installed, waiting" in json.dumps(posts(fake)[0]["blocks"]))
    edited = json.dumps(posts(fake)[0]["blocks"], ensure_ascii=False)
    assert "Renewed automatically by mdmbot" in edited and "command line" not in edited
    assert posts(fake)[0]["text"] == "Renewed: school1 — installed, waiting for first use"
    assert "install_again" not in edited, "no live button once installed"


def test_a_refused_api_key_is_not_retried_and_an_administrator_updates_it(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    connected_add(bot, fake, nanodep)
    nanodep.api_key = "rotated-in-nanodep"
    _renew_from_alert(bot, fake)
    alert = posts(fake)[-1]
    text = json.dumps(alert["blocks"], ensure_ascii=False)
    assert "401 from NanoDEP (school1) — check the API key." in text
    assert "retrying cannot help: an Administrator presses *Update API key*" in text
    assert buttons(alert) == [("Update API key", "update_api_key")]
    assert "mdmbot tries again" not in text and "keeps retrying" not in text
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(bot.clock() + timedelta(hours=7)).installs_tried == 0, "no retries"

    manager = "USITEMGR1"
    fake.add_user(manager, "kim", "kim@school.example")
    bot.grant(manager, Role.SITE_MANAGER)
    value = alert["blocks"][2]["elements"][0]["value"]
    refused = json.dumps(_press_for_modal(bot, fake, manager, value))
    assert "Administrator" in refused and modals.MDM_API_KEY not in refused, "Administrators only"
    opened_view = _press_for_modal(bot, fake, ADMIN, value)
    assert modals.MDM_API_KEY in json.dumps(opened_view)
    blank = {modals.MDM_API_KEY: {"type": "plain_text_input", "value": "two words"}}
    reply = bot.submit(ADMIN, opened_view, blank, opened_view["id"])
    assert reply.json()["errors"] == {
        modals.MDM_API_KEY: "Paste the API key as one word, without spaces."
    }
    key = {modals.MDM_API_KEY: {"type": "plain_text_input", "value": "rotated-in-nanodep"}}
    assert bot.submit(ADMIN, opened_view, key, opened_view["id"]).json()["response_action"] == (
        "update"
    )
    bot.wait_idle(lambda: "school1" in nanodep.tokens and _is_installed(bot))
    bot.wait_idle(lambda: "installed, waiting" in posts(fake)[-1]["text"])
    assert "rotated-in-nanodep" not in repr(fake.calls) + json.dumps(fake.views)


def _is_installed(bot: Bot) -> bool:
    return "installed, waiting for first use" in show(bot)


def _press_for_modal(bot: Bot, fake: FakeSlack, user: str, value: str) -> dict[str, Any]:
    """Press "Update API key" as `user`: the modal Slack opened."""
    opened = len(fake.calls_to("views.open"))
    bot.press(user, "update_api_key", value)
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    return bot.opened_view()
