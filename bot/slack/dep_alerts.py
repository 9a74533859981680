"""Slack side of the Apple port: replaced tokens still presented, tokens not installed, servers
created through the School Manager API (no token yet, as at Apple)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, Respond

from bot import metrics
from bot.slack.builders import phrases
from bot.slack.builders.blocks import (
    Block,
    button,
    context,
    local_date,
    local_time,
    mention,
    plain,
    plural,
    section,
)
from bot.slack.builders.blocks import esc as _esc
from bot.slack.builders.home_blocks import RESEND
from bot.slack.gateway import SlackUnavailable
from bot.slack.lifecycle import alert_channel, edit_stale, refresh_case
from bot.slack.services import BotServices
from core.connections.server_state import ServerState
from core.dep.feedback import InstallReminder, ReplacedTokenAlert
from core.errors import MdmbotError
from core.people import alerts, superseded
from core.roles import Actor
from core.tokens.resend import token_file_again

log = logging.getLogger("mdmbot.dep_alerts")


def post_claimed(
    svc: BotServices,
    delivery_id: int,
    kind: str,
    text: str,
    blocks: list[Block],
    now: datetime,
    claimed_at: datetime | None = None,
) -> str | None:
    """Post a claimed alert (claimed at `claimed_at`, default `now`) while the claim is still
    held, and record the outcome (retried when failed); Slack's error or None."""
    with svc.ctx.unit_of_work() as session:
        held = alerts.hold_claim(session, delivery_id, claimed_at or now, now)
    if not held:
        log.info("%s alert %s was taken over by another process; not posted", kind, delivery_id)
        return None
    try:
        posted = svc.gateway.post(alert_channel(svc), text, blocks)
    except SlackUnavailable as exc:
        with svc.ctx.unit_of_work() as session:
            alerts.mark_failed(session, delivery_id, exc.error, now)
        metrics.alerts_failed.labels(kind).inc()
        return exc.error
    with svc.ctx.unit_of_work() as session:
        alerts.mark_sent(session, delivery_id, channel=posted.channel, ts=posted.ts, now=now)
        name, older = superseded.supersede_older(session, delivery_id, now)
    metrics.alerts_sent.labels(kind).inc()
    line = superseded_line(name)
    for channel, ts in older:  # one live message per server: the older lose their buttons
        try:
            svc.gateway.update(channel, ts, line, [context(line)])
        except SlackUnavailable as exc:
            log.info("older message %s:%s not edited (%s)", channel, ts, exc.error)
    return None


def superseded_line(server_name: str) -> str:
    """What an older message about a server says once a newer one was posted (no buttons)."""
    return f"Superseded: the newer message about *{_esc(server_name)}* below says what is left."


def replaced_headline(alert: ReplacedTokenAlert, st: ServerState | None = None) -> str:
    """The header of a replaced-token report: the server and its state (plain text)."""
    what = phrases.word(st) if st else "still presents the replaced token"
    return f"{alert.server_name}: {what}"


def replaced_text(alert: ReplacedTokenAlert, st: ServerState | None = None) -> str:
    """The notification text of a replaced-token report, escaped like the blocks."""
    return _esc(replaced_headline(alert, st))


def state_blocks(name: str, st: ServerState, server_id: int, token_id: int | None) -> list[Block]:
    """The server's state in a channel message: problem, who acts, the one button."""
    blocks = [section(phrases.sentence(name, st))]
    todo, found = phrases.action(st), phrases.action_button(st, server_id, token_id)
    if found is not None:
        blocks.append({"type": "actions", "block_id": "state_action", "elements": [found]})
    if todo is not None and todo.holder:
        blocks.append(context(f"Only {mention(todo.holder)} can get the file again."))
    return blocks


def replaced_blocks(
    alert: ReplacedTokenAlert, st: ServerState | None = None, server_id: int = 0
) -> list[Block]:
    """The server's state (the old token is refused), then how often it was refused."""
    facts = (
        f"mdmbot refused the replaced token (replaced {local_time(alert.replaced_at)}): "
        f"*{plural(alert.attempts, 'refused attempt')}*, the last {local_time(alert.last_at)}."
    )
    body = state_blocks(alert.server_name, st, server_id, alert.new_token_id) if st else []
    return [
        {"type": "header", "text": plain(replaced_headline(alert, st), 150)},
        *body,
        context(f"{facts} Reported once, then at most once a day while it goes on."),
    ]


def reminder_headline(reminder: InstallReminder, st: ServerState | None = None) -> str:
    """The header of a not-in-use reminder (plain text)."""
    what = phrases.word(st) if st else "the new token is not in use yet"
    return f"{reminder.server_name}: {what}"


def reminder_text(reminder: InstallReminder, st: ServerState | None = None) -> str:
    """The notification text of a not-in-use reminder, escaped like the blocks."""
    return _esc(reminder_headline(reminder, st))


def reminder_blocks(
    reminder: InstallReminder, st: ServerState | None = None, server_id: int = 0
) -> list[Block]:
    """A new token its MDM server has not used a day after issue: the state and its action."""
    seen = ""
    if reminder.old_last_seen:
        seen = f" It last used the old token {local_time(reminder.old_last_seen)}."
    body = state_blocks(reminder.server_name, st, server_id, reminder.token_id) if st else []
    return [
        {"type": "header", "text": plain(reminder_headline(reminder, st), 150)},
        *body,
        context(
            f"The new token was made {local_time(reminder.issued_at)}.{seen} mdmbot reminds "
            "once a day until its MDM server uses it."
        ),
    ]


def post_replaced(svc: BotServices, alert: ReplacedTokenAlert) -> None:
    """Tell the alert channel that a replaced token was presented."""
    found = svc.server_state(token_id=alert.token_id)
    st, server_id = (found[1], found[0].id) if found else (None, 0)
    post_claimed(
        svc,
        alert.delivery_id,
        "replaced",
        replaced_text(alert, st),
        replaced_blocks(alert, st, server_id),
        svc.ctx.now(),
        alert.claimed_at,
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
        svc.answer(body, respond, text)


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
