"""Slack side of the Apple port: replaced tokens still presented, tokens not installed, servers
created through the School Manager API (no token yet, as at Apple)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, Respond

from bot import metrics
from bot.slack.builders.blocks import (
    Block,
    button,
    context,
    file_holder,
    local_date,
    local_time,
    mention,
    plain,
    plural,
    section,
)
from bot.slack.builders.blocks import esc as _esc
from bot.slack.builders.home_blocks import RESEND, resend_button
from bot.slack.gateway import SlackUnavailable
from bot.slack.lifecycle import alert_channel, edit_stale, refresh_case
from bot.slack.services import BotServices
from core.dep.feedback import InstallReminder, ReplacedTokenAlert
from core.errors import MdmbotError
from core.people import alerts
from core.roles import Actor
from core.tokens.resend import token_file_again

log = logging.getLogger("mdmbot.dep_alerts")


def post_claimed(
    svc: BotServices, delivery_id: int, kind: str, text: str, blocks: list[Block], now: datetime
) -> str | None:
    """Post a claimed alert and record the outcome (retried when failed); Slack's error or None."""
    try:
        posted = svc.gateway.post(alert_channel(svc), text, blocks)
    except SlackUnavailable as exc:
        with svc.ctx.unit_of_work() as session:
            alerts.mark_failed(session, delivery_id, exc.error, now)
        metrics.alerts_failed.labels(kind).inc()
        return exc.error
    with svc.ctx.unit_of_work() as session:
        alerts.mark_sent(session, delivery_id, channel=posted.channel, ts=posted.ts, now=now)
    metrics.alerts_sent.labels(kind).inc()
    return None


def replaced_text(alert: ReplacedTokenAlert) -> str:
    """The notification text of a replaced-token report: the action first."""
    return _esc(
        f"Upload the new token to {alert.server_name}: it is still using the replaced one and "
        "cannot enrol or sync devices"
    )


def _resend(token_id: int | None, holder: str | None) -> list[Block]:
    """A "Send me the file again" button when a Slack user holds the file."""
    if token_id is None or not file_holder(holder).endswith("DMs"):
        return []
    return [{"type": "actions", "block_id": "resend", "elements": [resend_button(token_id)]}]


def replaced_blocks(alert: ReplacedTokenAlert) -> list[Block]:
    """What to do and who holds the file, then why: the old token is refused."""
    name = _esc(alert.server_name)
    if alert.new_token_id is None:
        todo = f"*Give {name} a new token:* press Get token on the mdmbot Home tab."
    else:
        todo = f"*Upload the new token file to {name}* ({file_holder(alert.new_downloaded_by)})."
    return [
        {"type": "header", "text": plain(f"{alert.server_name}: upload the new token", 150)},
        section(
            f":no_entry: {todo}\nIts MDM server is still using the token that was replaced "
            f"{local_time(alert.replaced_at)}. mdmbot refuses that token, so the server cannot "
            f"enrol or sync devices: *{plural(alert.attempts, 'refused attempt')}*, the last "
            f"{local_time(alert.last_at)}."
        ),
        *_resend(alert.new_token_id, alert.new_downloaded_by),
        context("Reported once, then at most once a day while the old token is still used."),
    ]


def reminder_headline(reminder: InstallReminder) -> str:
    """The header of a not-installed reminder (plain text)."""
    return f"The new token for {reminder.server_name} is not yet uploaded to its MDM server"


def reminder_text(reminder: InstallReminder) -> str:
    """The notification text of a not-installed reminder, escaped like the blocks."""
    return _esc(reminder_headline(reminder))


def reminder_blocks(reminder: InstallReminder) -> list[Block]:
    """A new token its MDM server has not used a day after issue."""
    seen = f", last seen {local_time(reminder.old_last_seen)}" if reminder.old_last_seen else ""
    return [
        {"type": "header", "text": plain(reminder_headline(reminder), 150)},
        section(
            f":hourglass_flowing_sand: *Upload the new token file to "
            f"{_esc(reminder.server_name)}* ({file_holder(reminder.downloaded_by)}).\n"
            f"{mention(reminder.downloaded_by)} downloaded it {local_time(reminder.issued_at)}, "
            f"but the MDM server has not used it; it was using the old token{seen}."
        ),
        *_resend(reminder.token_id, reminder.downloaded_by),
    ]


def post_replaced(svc: BotServices, alert: ReplacedTokenAlert) -> None:
    """Tell the alert channel that a replaced token was presented."""
    post_claimed(
        svc,
        alert.delivery_id,
        "replaced",
        replaced_text(alert),
        replaced_blocks(alert),
        svc.ctx.now(),
    )


def refresh_cases(svc: BotServices, case_ids: tuple[int, ...]) -> None:
    """A token's first use: update the checklists it ticked and the alerts it settled."""
    for case_id in case_ids:
        try:
            refresh_case(svc, case_id)
        except SlackUnavailable as exc:
            log.warning("could not update checklist %s: %s", case_id, exc.error)
    edit_stale(svc)


def send_again(svc: BotServices, user_id: str, token_id: int) -> str:
    """DM the token file again to whoever downloaded it; what to tell the presser."""
    with svc.ctx.unit_of_work() as session:
        again = token_file_again(session, svc.ctx.vault, Actor(user_id), token_id, svc.ctx.now())
    comment = (
        f"Here is the server token for *{_esc(again.server_name)}* again (the same token, "
        f"expiring {local_date(again.expires_at)}). Upload it to the MDM server where it asks "
        "for the Apple server token. Keep the file private."
    )
    try:
        svc.gateway.send_file(svc.gateway.open_dm(user_id), again.filename, again.content, comment)
    except SlackUnavailable as exc:
        log.warning("could not send token %s again: %s", token_id, exc.error)
        return "Slack didn't deliver the file; try again in a minute."
    return f"The token file for *{_esc(again.server_name)}* is in your DMs again."


def register(app: App, svc: BotServices) -> None:
    """Register "Send me the file again" (alerts, warnings, reminders and the App Home)."""

    @app.action(RESEND)
    def on_resend(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        user = str(body["user"]["id"])
        try:
            text = send_again(svc, user, int(body["actions"][0].get("value") or 0))
        except MdmbotError as exc:
            text = f":no_entry: {exc.message}"
        if body.get("response_url"):
            respond(text=text, response_type="ephemeral", replace_original=False)
        else:
            svc.try_dm(user, text)


def post_server_created(svc: BotServices, server_id: int, name: str, client_id: str) -> None:
    """Post the news with a Get token button (best effort: the Home tab offers it too)."""
    text = (
        f"*{_esc(name)}* was linked through the School Manager API (`{_esc(client_id)}`). "
        "It has no token yet: get one and upload it to the MDM server."
    )
    blocks = [
        section(text),
        {"type": "actions",
         "elements": [button("Get token", "server_token", str(server_id), "primary")]},
    ]  # fmt: skip
    try:
        svc.gateway.post(alert_channel(svc), f"{name} needs a token", blocks)
    except SlackUnavailable as exc:
        log.warning("could not tell the alert channel about %s (%s)", name, exc.error)
