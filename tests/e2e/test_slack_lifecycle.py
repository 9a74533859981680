"""Scenarios: expiry alerts, departures, password changes and rotation through the running bot."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from bot.slack.sweeper import Sweeper
from core.models import AuditEvent, Person
from core.tokens import issuance
from tests import certs
from tests.dep_client import mdm_server_installs
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_guards import active_tokens, add_server
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

LEAVER = "ULEAVER01"


def posts(fake: FakeSlack, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
    return [m for m in fake.messages_in(channel) if not m.get("ephemeral")]


def press_on(
    bot: Bot, fake: FakeSlack, user: str, message: dict[str, Any], action: str, value: str
) -> dict[str, Any]:
    """Press a button on a posted message, confirm the modal, return the confirm modal."""
    opened = len(fake.calls_to("views.open"))
    bot.press(
        user,
        action,
        value,
        container={
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": message["channel"],
            "is_ephemeral": False,
        },
        message=message,
    )
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    view = bot.opened_view()
    reply = bot.submit(user, view, {}, view_id=view["id"])
    assert reply.status == 200
    return view


def test_departure_event_delivered_twice_gives_one_checklist_and_buttons_rotate(
    bot: Bot, fake: FakeSlack
) -> None:
    fake.add_user(LEAVER, "lee", "lee@school.example")
    bot.grant(LEAVER)
    for name in ("Jamf Pro", "Mosyle"):
        bot.svc.ctx.clock.now += timedelta(seconds=1)
        add_server_as(bot, fake, LEAVER, name)
    fake.set_user_deleted(LEAVER, True)
    user = {
        "id": LEAVER,
        "name": "lee",
        "deleted": True,
        "real_name": "Lee Leaver",
        "profile": {"email": "lee@school.example", "real_name": "Lee Leaver"},
    }
    event = {"type": "user_change", "user": user, "event_ts": "1.0"}
    assert bot.event(event, event_id="Ev0DEPART").status == 200
    assert bot.event(event, event_id="Ev0DEPART", retry_num=1).status == 200
    bot.wait_idle(lambda: len(posts(fake)) >= 1)
    bot.event(event, event_id="Ev0OTHER")
    bot.wait_idle(lambda: len(fake.calls_to("users.info")) >= 0)
    checklist = posts(fake)
    assert len(checklist) == 1, "one checklist however often Slack delivers the event"
    assert checklist[0]["text"] == "Lee Leaver left — renew 2 server tokens", "why, then what"
    header = checklist[0]["blocks"][0]["text"]["text"]
    assert header == "Lee Leaver (lee@school.example) left the organisation", "not the handle"
    text = json.dumps(checklist[0]["blocks"])
    assert "Jamf Pro" in text and "Mosyle" in text and "rotate_token" in text
    before = set(active_tokens(bot))

    message = checklist[0]
    token_id = next(
        b["accessory"]["value"]
        for b in message["blocks"]
        if b.get("accessory", {}).get("action_id") == "rotate_token"
    )
    uploads = len(fake.uploads)
    view = press_on(bot, fake, ADMIN, message, "rotate_token", token_id)
    assert "stops working" in json.dumps(view)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    assert fake.uploads[-1]["channel_id"] == fake.dm_channel_for(ADMIN)
    comment = fake.uploads[-1]["initial_comment"]
    assert "it replaces the current token, which stops working as soon as" in comment
    assert "has stopped" not in comment, "the DM goes out before the new token is active"
    waiting = "— waiting for upload · expires <!date^"

    def shown() -> str:
        return json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"], ensure_ascii=False)

    bot.wait_idle(lambda: waiting in shown())
    assert f"<@{ADMIN}> uploads the new token file" in shown(), "the renewed line names who acts"
    mdm_server_installs(bot.ctx, bot.svc, fake.uploads[-1])
    bot.wait_idle(lambda: "renewed by" in json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"]))
    updated = json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"])
    assert f"<@{ADMIN}>" in updated and "1 of 2 left" in updated
    after = set(active_tokens(bot))
    assert len(after) == 2 and len(before & after) == 1, "untouched token stays valid"

    second = next(
        b["accessory"]["value"]
        for b in fake.messages_in("C0ALERTS")[0]["blocks"]
        if b.get("accessory", {}).get("action_id") == "rotate_token"
    )
    uploads = len(fake.uploads)
    press_on(bot, fake, ADMIN, fake.messages_in("C0ALERTS")[0], "rotate_token", second)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    mdm_server_installs(bot.ctx, bot.svc, fake.uploads[-1])
    bot.wait_idle(lambda: "Done" in json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"]))
    assert len(posts(fake)) == 1


def add_server_as(bot: Bot, fake: FakeSlack, user: str, name: str) -> None:
    from bot.slack.builders import modals
    from tests.e2e.test_slack_add import add_values

    uploads = len(fake.uploads)
    reply = bot.submit(
        user,
        {"callback_id": modals.ADD_SERVER},
        add_values(fake, name, certs.self_signed_rsa().pem),
    )
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    bot.wait_idle(lambda: len(active_tokens(bot)) >= 1)


def test_password_change_opens_a_checklist_for_own_tokens(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    reply = bot.command(ADMIN, "password-changed")
    assert reply.status == 200
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    assert "changed their Managed Apple Account password" in json.dumps(posts(fake)[0]["blocks"])
    bot.wait_idle(lambda: any("checklist" in str(r.get("text")) for r in fake.responses))


def test_offboard_survives_profile_edits_and_reactivation_cancels(
    bot: Bot, fake: FakeSlack
) -> None:
    fake.add_user(LEAVER, "lee", "lee@school.example")
    bot.grant(LEAVER)
    add_server_as(bot, fake, LEAVER, "Jamf Pro")
    bot.command(ADMIN, f"offboard <@{LEAVER}|lee>")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    active = {"id": LEAVER, "name": "lee", "deleted": False, "profile": {"title": "Teacher"}}
    bot.event({"type": "user_change", "user": active}, event_id="Ev0EDIT")
    time.sleep(0.5)
    assert "Cancelled" not in json.dumps(posts(fake)[0]["blocks"]), "a profile edit cancels nothing"

    gone = {"id": LEAVER, "name": "lee", "deleted": True, "profile": {}}
    bot.event({"type": "user_change", "user": gone}, event_id="Ev0GONE")
    bot.event({"type": "user_change", "user": active}, event_id="Ev0BACK")
    bot.wait_idle(lambda: "Cancelled" in json.dumps(posts(fake)[0]["blocks"]))
    assert len(posts(fake)) == 1, "the departure joined the open offboarding checklist"


def test_user_changes_apply_in_the_order_they_arrived(bot: Bot, fake: FakeSlack) -> None:
    fake.add_user(LEAVER, "lee", "lee@school.example")
    bot.grant(LEAVER)
    add_server_as(bot, fake, LEAVER, "Jamf Pro")
    for turn in range(15):
        for deleted in (True, False):
            user = {"id": LEAVER, "name": "lee", "deleted": deleted, "profile": {}}
            bot.event({"type": "user_change", "user": user}, event_id=f"Ev{turn}{deleted}")

    def changes() -> list[str]:
        with bot.ctx.unit_of_work(readonly=True) as session:
            return [
                e.action
                for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))
                if e.action in ("person.deactivate", "person.reactivate")
            ]

    deadline = time.monotonic() + 10
    while len(changes()) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert changes() == ["person.deactivate", "person.reactivate"] * 15
    with bot.ctx.unit_of_work(readonly=True) as session:
        person = session.get(Person, LEAVER)
        assert person is not None and person.deactivated_at is None


def test_expiry_alerts_post_once_and_renew_updates_the_alert(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    with bot.ctx.unit_of_work() as session:
        token = issuance.list_tokens(session)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    at = token.expires_at - timedelta(days=29)
    fake.rate_limit_next("chat.postMessage", retry_after=1)
    assert sweeper.sweep(at).alerts_sent == 1
    assert sweeper.sweep(at).alerts_sent == 0
    assert sweeper.sweep(at + timedelta(hours=5)).alerts_sent == 0
    alert = posts(fake)
    assert len(alert) == 1
    assert "expires in 30 days" in alert[0]["text"] or "expires in 29 days" in alert[0]["text"]
    assert f"<@{ADMIN}>" in json.dumps(alert[0]["blocks"])
    bot.clock.now = at
    press_on(bot, fake, ADMIN, alert[0], "renew_token", str(token.id))
    bot.wait_idle(lambda: "Renewed" in json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"]))
    assert sweeper.sweep(token.expires_at - timedelta(days=6)).alerts_sent == 0, (
        "a superseded token never alerts"
    )


def test_slack_outage_during_sweep_retries_next_time(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    with bot.ctx.unit_of_work() as session:
        token = issuance.list_tokens(session)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    at = token.expires_at - timedelta(days=13)
    fake.fail_next("chat.postMessage", error="internal_error", status=503, times=3)
    report = sweeper.sweep(at)
    assert (report.alerts_sent, report.alerts_failed) == (0, 1)
    assert sweeper.sweep(at + timedelta(hours=1)).alerts_sent == 1
    assert len(posts(fake)) == 1


def test_reconciliation_catches_a_missed_departure(bot: Bot, fake: FakeSlack) -> None:
    fake.add_user(LEAVER, "lee", "lee@school.example")
    bot.grant(LEAVER)
    add_server_as(bot, fake, LEAVER, "Jamf Pro")
    fake.set_user_deleted(LEAVER, True)
    report = Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    assert report.departures_found == [LEAVER]
    assert report.checklists_posted == 1
    assert "Jamf Pro" in json.dumps(posts(fake)[0]["blocks"])
    again = Sweeper(bot.svc, post_interval=0).sweep(bot.clock() + timedelta(hours=1))
    assert not again.reconciled and again.checklists_posted == 0


def thread_replies(fake: FakeSlack, parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in posts(fake) if m.get("thread_ts") == parent["ts"]]


def test_daily_reminder_goes_in_the_checklist_thread_until_done(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    bot.command(ADMIN, "password-changed")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    checklist = posts(fake)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    start = bot.clock()
    assert sweeper.sweep(start + timedelta(hours=2)).checklists_posted == 0
    assert sweeper.sweep(start + timedelta(hours=25)).checklists_posted == 1
    assert sweeper.sweep(start + timedelta(hours=26)).checklists_posted == 0
    top_level = [m for m in posts(fake) if not m.get("thread_ts")]
    assert top_level == [checklist], "no second copy of the checklist in the channel"
    (reminder,) = thread_replies(fake, checklist)
    assert "Reminder" in reminder["text"] and "rotate_token" not in json.dumps(reminder["blocks"])
    assert not reminder["reply_broadcast"], "nothing is overdue yet"

    assert sweeper.sweep(start + timedelta(days=8)).checklists_posted == 1
    overdue = thread_replies(fake, checklist)[-1]
    assert "Overdue" in overdue["text"] and overdue["reply_broadcast"], "overdue: shown in channel"
    assert "renewing: *Jamf Pro* (checklist opened" in overdue["text"], "names what is left"
    link = f"/archives/C0ALERTS/p{checklist['ts'].replace('.', '')}|Open the checklist>"
    assert link in overdue["text"], "links to the checklist"

    token_id = next(
        b["accessory"]["value"]
        for b in checklist["blocks"]
        if b.get("accessory", {}).get("action_id") == "rotate_token"
    )
    uploads = len(fake.uploads)
    press_on(bot, fake, ADMIN, checklist, "rotate_token", token_id)
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    assert sweeper.sweep(start + timedelta(days=9)).checklists_posted == 1, "still waiting"
    mdm_server_installs(bot.ctx, bot.svc, fake.uploads[-1])
    bot.wait_idle(lambda: "Done" in json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"]))
    assert "rotate_token" not in json.dumps(fake.messages_in("C0ALERTS")[0]["blocks"])
    assert sweeper.sweep(start + timedelta(days=11)).checklists_posted == 0


def test_a_sweep_during_a_slow_checklist_post_does_not_post_it_again(
    bot: Bot, fake: FakeSlack
) -> None:
    add_server(bot, fake)
    fake.reply_delay["chat.postMessage"] = 1.0  # Slack took the message but answers slowly
    bot.command(ADMIN, "password-changed")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(bot.clock() + timedelta(hours=2)).checklists_posted == 0
    time.sleep(1.5)
    assert len(posts(fake)) == 1, "the checklist was claimed before it was posted"
