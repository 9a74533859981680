"""Slack side of the token feedback loop: replaced tokens still presented, tokens not installed."""

from __future__ import annotations

import logging
from datetime import datetime

from bot import metrics
from bot.slack.builders.blocks import Block, context, local_time, mention, plain, plural, section
from bot.slack.builders.blocks import esc as _esc
from bot.slack.gateway import SlackUnavailable
from bot.slack.lifecycle import alert_channel, refresh_case
from bot.slack.services import BotServices
from core.dep.feedback import InstallReminder, ReplacedTokenAlert
from core.people import alerts

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


def replaced_headline(alert: ReplacedTokenAlert) -> str:
    """The header of a replaced-token report (plain text)."""
    return f"{alert.server_name} is still using a replaced server token"


def replaced_text(alert: ReplacedTokenAlert) -> str:
    """The notification text of a replaced-token report, escaped like the blocks."""
    return _esc(replaced_headline(alert))


def replaced_blocks(alert: ReplacedTokenAlert) -> list[Block]:
    """Which server, since when, how many attempts, from where, and what to do."""
    why = f" ({_esc(alert.reason)})" if alert.reason else ""
    return [
        {"type": "header", "text": plain(replaced_headline(alert), 150)},
        section(
            f":no_entry: *MDM server:* {_esc(alert.server_name)}\n"
            f"Its token was replaced {local_time(alert.replaced_at)}{why}, but the MDM server "
            f"still presents the old one: *{plural(alert.attempts, 'attempt')}*, the last from "
            f"`{_esc(alert.last_from or '?')}`, {local_time(alert.last_at)}. mdmbot refuses it, so "
            "this server cannot enrol or sync devices.\n"
            "*Upload the new token file to the MDM server.*"
        ),
        context("Reported once, then at most once a day while the old token is still presented."),
    ]


def reminder_headline(reminder: InstallReminder) -> str:
    """The header of a not-installed reminder (plain text)."""
    return f"The new server token for {reminder.server_name} is not installed yet"


def reminder_text(reminder: InstallReminder) -> str:
    """The notification text of a not-installed reminder, escaped like the blocks."""
    return _esc(reminder_headline(reminder))


def reminder_blocks(reminder: InstallReminder) -> list[Block]:
    """A new token its MDM server has not used a day after issue."""
    seen = f", last seen {local_time(reminder.old_last_seen)}" if reminder.old_last_seen else ""
    return [
        {"type": "header", "text": plain(reminder_headline(reminder), 150)},
        section(
            f":hourglass_flowing_sand: *MDM server:* {_esc(reminder.server_name)}\n"
            f"{mention(reminder.downloaded_by)} downloaded a new token "
            f"{local_time(reminder.issued_at)}, but the MDM server has not used it; it was using "
            f"the old token{seen}.\n"
            "*Upload the new token file to the MDM server.*"
        ),
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
    """Update checklists whose items a first use just ticked."""
    for case_id in case_ids:
        try:
            refresh_case(svc, case_id)
        except SlackUnavailable as exc:
            log.warning("could not update checklist %s: %s", case_id, exc.error)
