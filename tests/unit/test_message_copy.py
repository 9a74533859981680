"""What alerts, checklists, the App Home and confirmations say (pure builders)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.slack.builders import blocks, modals, phrases
from bot.slack.builders import lifecycle_blocks as lb
from core.connections.server_state import state_of
from core.people.alerts import DueAlert, StaleAlert
from core.people.rotation import CaseView, ItemView
from tests.unit.test_blocks import server

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=29, hours=12)
EPOCH = int(EXPIRES.timestamp())


def styles(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("type") == "button":
            found.append(value.get("style", "default"))
        for item in value.values():
            found += styles(item)
    elif isinstance(value, list):
        for item in value:
            found += styles(item)
    return found


def alert(name: str = "Jamf Pro", threshold: int = 30) -> DueAlert:
    return DueAlert(1, 7, name, threshold, EXPIRES, "U0ADMIN", "Alex Rivera", NOW - 335 * lb_day())


def lb_day() -> timedelta:
    return timedelta(days=1)


def case(*, done: int = 0, email: str | None = "lee@school.example") -> CaseView:
    items = tuple(
        ItemView(
            i,
            10 + i,
            f"Server {i}",
            EXPIRES,
            "U0ADMIN" if i < done else None,
            NOW if i < done else None,
            i < done,
        )
        for i in range(3)
    )
    return CaseView(
        1,
        "U0LEAVER",
        "Lee Leaver",
        email,
        "departure",
        "open",
        NOW - 2 * lb_day(),
        "mdmbot",
        "C0ALERTS",
        "1.0",
        items,
    )


def test_alert_uses_local_dates_one_primary_button_and_an_escaped_fallback() -> None:
    rendered = json.dumps(lb.alert_blocks(alert(), NOW))
    assert f"<!date^{EPOCH}^{{date_short_pretty}} at {{time}}|" in rendered
    assert styles(lb.alert_blocks(alert(), NOW)) == ["primary"]
    assert lb.alert_headline(alert(), NOW) == "The server token for Jamf Pro expires in 30 days"
    assert lb.alert_text(alert("<!channel> & co"), NOW).startswith(
        "The server token for &lt;!channel&gt; &amp; co"
    )
    assert "Alex Rivera" not in rendered and "<@U0ADMIN>" in rendered, "the name once, as a mention"


def test_app_home_and_alert_count_days_the_same_way() -> None:
    view = replace(server(1, "Jamf Pro"), token_expires_at=EXPIRES, token_installed_at=NOW)
    assert "expires in 30 days" in phrases.line(view.name, state_of(view, NOW))
    assert "expires in 30 days" in lb.alert_headline(alert(), NOW)
    one = replace(view, token_expires_at=NOW + timedelta(hours=3))
    assert "expires in 1 day" in phrases.line(one.name, state_of(one, NOW))


def test_replaced_alert_says_what_is_left_until_first_use_then_in_use() -> None:
    stale = StaleAlert(
        1,
        "C0ALERTS",
        "1.0",
        "Jamf Pro",
        EXPIRES,
        "new token",
        "U0ADMIN",
        NOW,
        NOW + 365 * lb_day(),
        new_token_id=8,
        new_downloaded_by="U0ADMIN",
        server_id=1,
    )
    renewed = replace(
        server(1, "Jamf Pro"), token_id=8, downloaded_by="U0ADMIN", replaced_at=NOW,
        token_expires_at=NOW + 365 * lb_day(),
    )  # fmt: skip
    st = state_of(renewed, NOW)
    waiting = lb.alert_replaced_blocks(stale, st)
    rendered = json.dumps(waiting)
    assert lb.alert_replaced_text(stale, st) == "Renewed: Jamf Pro — waiting for upload"
    assert "Renewed by <@U0ADMIN> <!date^" in rendered
    assert "the new token is waiting for upload (in <@U0ADMIN>'s DMs)" in rendered
    assert "The old token stopped working, so it cannot enrol or sync devices" in rendered
    assert "nothing is left to do" not in rendered and "white_check_mark" not in rendered
    assert styles(waiting) == ["primary"] and "resend_token" in rendered, "Send me the file again"
    assert "Only <@U0ADMIN> can get the file again" in rendered
    used = state_of(replace(renewed, token_installed_at=NOW), NOW + lb_day())
    rendered = json.dumps(lb.alert_replaced_blocks(stale, used))
    assert lb.alert_replaced_text(stale, used) == "Renewed and in use: Jamf Pro"
    assert ":white_check_mark: Renewed by <@U0ADMIN> <!date^" in rendered
    assert "*Jamf Pro*: in use since <!date^" in rendered and "nothing is left" in rendered
    assert styles(lb.alert_replaced_blocks(stale, used)) == []
    cli = replace(stale, by="operator:root", reason="certificate replaced")
    by_root = state_of(replace(renewed, downloaded_by="root"), NOW)
    rendered = json.dumps(lb.alert_replaced_blocks(cli, by_root))
    assert "Certificate replaced by root on the command line" in rendered
    assert "(saved by root on the command line)" in rendered and "resend_token" not in rendered
    gone = replace(stale, reason="server removed", new_expires_at=None)
    assert lb.alert_replaced_text(gone) == "Removed: Jamf Pro"
    assert "removed *Jamf Pro* from mdmbot" in json.dumps(lb.alert_replaced_blocks(gone))


def test_checklist_reads_as_sentences_with_one_primary_button() -> None:
    built = lb.checklist_blocks(case(done=1), NOW)
    assert built[0]["text"]["text"] == "Lee Leaver (lee@school.example) left the organisation"
    assert styles(built) == ["primary", "default"], "one primary: the soonest token left"
    rendered = json.dumps(built)
    assert "Lee Leaver" not in json.dumps(built[1:]), "a mention, not the name repeated"
    assert "renewed by <@U0ADMIN> <!date^" in rendered and "2 of 3 left" in rendered
    assert lb.checklist_text(case()) == "Lee Leaver left — renew 3 server tokens"
    assert lb.checklist_text(case(done=2)) == "Lee Leaver left — renew 1 server token"
    assert lb.checklist_blocks(case(email=None), NOW)[0]["text"]["text"] == (
        "Lee Leaver left the organisation"
    )
    assert "Reminder: 3 server tokens" in lb.reminder_text(case(), NOW)
    assert "Overdue" in lb.reminder_text(case(), NOW + 6 * lb_day())


def test_checklist_items_say_when_the_leaver_downloaded_and_reminders_name_what_is_left() -> None:
    issued = NOW - 300 * lb_day()
    expired = replace(case(done=1), items=tuple(
        replace(item, issued_at=issued, expires_at=NOW - lb_day()) for item in case(done=1).items
    ))
    rendered = json.dumps(lb.checklist_blocks(expired, NOW), ensure_ascii=False)
    assert f"*Server 1* — downloaded <!date^{int(issued.timestamp())}^" in rendered
    assert "token *expired* <!date^" in rendered and "token expires" not in rendered
    reminder = lb.reminder_text(case(done=1), NOW)
    assert "still need renewing: *Server 1* and *Server 2* (checklist opened" in reminder
    assert "*Server 0*" not in reminder, "only the servers left"
    link = "https://school.slack.com/archives/C0ALERTS/p10"
    overdue = lb.reminder_text(case(done=1), NOW + 6 * lb_day(), link)
    assert overdue.startswith(":warning: *Overdue:*") and f"<{link}|Open the checklist>" in overdue


def test_renew_confirmation_says_when_the_token_expires_and_if_it_is_needed() -> None:
    healthy = replace(server(1, "Jamf Pro"), token_expires_at=NOW + 200 * lb_day())
    text = json.dumps(modals.confirm_token_modal(healthy, now=NOW))
    assert "The current token expires <!date^" in text and "(in 200 days)" in text
    assert "isn't needed yet" in text and "stops working" in text
    soon = replace(healthy, token_expires_at=EXPIRES)
    assert "it is time to renew it" in json.dumps(modals.confirm_token_modal(soon, now=NOW))
    tokenless = replace(healthy, token_expires_at=None, token_id=None)
    get = modals.confirm_token_modal(tokenless, now=NOW)
    text = json.dumps(get)
    assert "no token yet" in text and "stops working" not in text
    assert (get["title"]["text"], get["submit"]["text"]) == ("Get server token", "Get token")
    expired = replace(healthy, token_expires_at=NOW - lb_day())
    text = json.dumps(modals.confirm_token_modal(expired, now=NOW))
    assert "expired" in text and "stops working" not in text
    view = modals.confirm_token_modal(healthy, now=NOW)
    assert (view["title"]["text"], view["submit"]["text"]) == ("Renew server token", "Renew token")


def test_renew_confirmation_leads_with_the_servers_state() -> None:
    soon = replace(server(1, "Jamf Pro"), token_expires_at=EXPIRES)
    text = json.dumps(modals.confirm_token_modal(soon, now=NOW))
    assert text.count("*Jamf Pro*: token expires in") == 1, "the state as every surface says it"
    tokenless = replace(soon, token_expires_at=None, token_id=None)
    text = json.dumps(modals.confirm_token_modal(tokenless, now=NOW))
    assert "*Jamf Pro* has no token yet, so it cannot enrol or sync devices." in text
    connected = replace(soon, mdm_label="NanoDEP (school1)")
    text = json.dumps(modals.confirm_token_modal(connected, now=NOW))
    assert "mdmbot installs the new one into NanoDEP (school1)" in text
    assert "keeps retrying" not in text, "a refused API key is not retried"


def test_add_server_modal_names_every_extension_and_explains_releasing() -> None:
    text = json.dumps(modals.add_server_modal())
    assert ".pem, .der, .cer or .crt" in text
    assert "Releasing removes a device from Apple School Manager" in text


def test_certificate_warning_in_the_token_dm_uses_a_local_date() -> None:
    ends = NOW + 20 * lb_day()
    warning = f"This certificate expires on {ends:%Y-%m-%d}, within 30 days; get a new one."
    comment = blocks.token_comment("Jamf Pro", EXPIRES, (warning,), certificate_not_after=ends)
    assert f":warning: This certificate expires on <!date^{int(ends.timestamp())}^" in comment
    assert f"{ends:%Y-%m-%d}" not in comment


def test_home_offers_the_file_again_only_to_whoever_holds_it() -> None:
    from bot.slack.builders import home_blocks
    from core.roles import Role

    replaced = replace(server(1, "Jamf Pro"), downloaded_by="U0ALEX", replaced_at=NOW)
    replaced = replace(replaced, token_expires_at=NOW + 365 * lb_day())
    healthy = replace(server(2, "Mosyle"), token_expires_at=NOW + 200 * lb_day())
    healthy = replace(healthy, token_installed_at=NOW)

    def buttons(viewer: str) -> list[list[str]]:
        view = home_blocks.home_view(
            [healthy, replaced], NOW + 2 * lb_day(), Role.SITE_MANAGER, viewer=viewer
        )
        return [
            [e["text"]["text"] for e in b.get("elements", []) if e["type"] == "button"]
            for b in view["blocks"]
            if b.get("block_id", "").startswith("server:")
        ]

    assert buttons("U0ALEX") == [["Send me the file again"], []], "waiting on you first"
    assert buttons("U0SAM") == [[], []], "nothing to press but the ⋯ menu"
    home = home_blocks.home_view([healthy, replaced], NOW + 2 * lb_day(), Role.SITE_MANAGER)
    text = json.dumps(home["blocks"], ensure_ascii=False)
    assert "*Waiting on you (1)*" in text
    assert "🔴 *Jamf Pro*: the new token is waiting for upload (in <@U0ALEX>'s DMs)" in text
    assert "<@U0ALEX> uploads the new token file to the MDM server" in text
    assert "🟢 *Mosyle* — in use · expires <!date^" in text, "a healthy server: one line"
    renew = [b for b in home["blocks"] if b.get("block_id") == f"server:{healthy.id}"]
    assert renew[0]["accessory"]["options"][0]["text"]["text"] == "Renew token", "Renew in ⋯"


@pytest.mark.parametrize("portal", ["Apple School Manager", "Apple Business"])
def test_apple_mode_asks_apples_portal_for_a_new_token_not_a_renewal(portal: str) -> None:
    expired = replace(server(1, "Jamf Pro"), token_expires_at=NOW - lb_day(), token_source="apple")
    st = state_of(expired, NOW, portal)
    rendered = json.dumps(lb.alert_blocks(alert(threshold=0), NOW, st))
    assert f"until a new token from {portal} is taken in" in rendered
    assert f"as soon as {portal} issues the new one" in rendered
    assert "renewed token" not in rendered and "Upload token" in rendered
    assert "until it has a renewed token" in json.dumps(lb.alert_blocks(alert(threshold=0), NOW))
    assert lb.checklist_text(case(done=1), portal=portal) == (
        f"Lee Leaver left — get 2 new server tokens from {portal}"
    )
    assert portal == "Apple School Manager" or "School Manager" not in rendered
