"""Pure Block Kit builders for expiry alerts and rotation checklists (50 blocks a message)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from bot.slack.blocks import (
    MAX_MESSAGE_BLOCKS,
    Block,
    button,
    context,
    day,
    esc,
    mention,
    plain,
    section,
    stamp,
)
from core.alerts import DueAlert
from core.rotation import CaseView

RENEW = "renew_token"
WAITING = "replaced, waiting for the MDM server to use the new token"
ROTATE = "rotate_token"
REASON_TEXT = {
    "departure": "left the organisation",
    "password_change": "changed their Managed Apple Account password",
}


def _who(user_id: str, name: str | None) -> str:
    return f"{mention(user_id)} ({esc(name)})" if name else mention(user_id)


def days_until(expires_at: datetime, now: datetime) -> int:
    """Whole days left, counting a part day as one."""
    return max(0, math.ceil((expires_at - now) / timedelta(days=1)))


def alert_headline(alert: DueAlert, now: datetime) -> str:
    """The one-line summary of an expiry alert."""
    if alert.threshold == 0 or alert.expires_at <= now:
        return f"The server token for {alert.server_name} has expired"
    left = days_until(alert.expires_at, now)
    return f"The server token for {alert.server_name} expires in {_days(left)}"


def _days(days: int) -> str:
    return f"{days} day{'s' if days != 1 else ''}"


def alert_blocks(alert: DueAlert, now: datetime) -> list[Block]:
    """An expiry alert with a "Renew token" button (its value is only the token id)."""
    left = alert.expires_at - now
    if alert.threshold == 0 or left <= timedelta(0):
        when = (
            f":red_circle: *Expired* {stamp(alert.expires_at)}. Enrolment through this server "
            "has stopped until a new token is uploaded to it."
        )
    else:
        when = (
            f":large_yellow_circle: Expires *{day(alert.expires_at)}* "
            f"({stamp(alert.expires_at)}), in {_days(days_until(alert.expires_at, now))}."
        )
    return [
        {"type": "header", "text": plain(alert_headline(alert, now), 150)},
        section(
            f"*MDM server:* {esc(alert.server_name)}\n{when}\n"
            f"*Downloaded by:* {_who(alert.downloaded_by, alert.downloaded_by_name)} on "
            f"{day(alert.issued_at)}"
        ),
        {
            "type": "actions",
            "block_id": f"alert:{alert.token_id}",
            "elements": [button("Renew token", RENEW, str(alert.token_id), "primary")],
        },
        context(
            "Renewing issues a new token, DMs it to you and stops the old one at once: "
            "upload it to the MDM server straight away."
        ),
    ]


def alert_done_blocks(
    server_name: str, renewed_by: str, new_expiry: datetime, now: datetime
) -> list[Block]:
    """The alert after someone renewed the token."""
    return [
        {"type": "header", "text": plain(f"Renewed: {server_name}", 150)},
        section(
            f":white_check_mark: {mention(renewed_by)} renewed the server token for "
            f"*{esc(server_name)}* on {stamp(now)}. The new token expires {day(new_expiry)}."
        ),
    ]


def checklist_text(case: CaseView) -> str:
    """The notification text of a checklist."""
    who = case.person_name or case.person_id
    if case.status == "done":
        return f"All tokens downloaded by {who} have been rotated"
    if case.status == "cancelled":
        return f"Rotation for {who} cancelled"
    return f"{len(case.left)} server token(s) downloaded by {who} must be rotated"


def checklist_blocks(case: CaseView, now: datetime) -> list[Block]:
    """The rotation checklist: one line per token, a "Rotate" button on each one left."""
    person = _who(case.person_id, case.person_name)
    if case.person_email:
        person += f" · {esc(case.person_email)}"
    reason = REASON_TEXT.get(case.reason, case.reason)
    blocks: list[Block] = [
        {
            "type": "header",
            "text": plain(
                f"Rotate server tokens: {case.person_name or 'a user'} "
                f"{'left' if case.reason == 'departure' else 'changed password'}",
                150,
            ),
        },
        section(
            f"{person} {reason}. Apple requires every server token they downloaded to be "
            "replaced. The tokens keep working until each is rotated here, so enrolment is "
            "not interrupted."
        ),
    ]
    room = MAX_MESSAGE_BLOCKS - len(blocks) - 2
    items = list(case.items)
    shown = items[:room]
    for item in shown:
        if item.done_at is not None:
            blocks.append(
                section(
                    f":white_check_mark: *{esc(item.server_name)}* — rotated by "
                    f"{mention(item.done_by)} on {stamp(item.done_at)}"
                )
            )
            continue
        line = (
            f":arrows_counterclockwise: *{esc(item.server_name)}* — token expires "
            f"{day(item.expires_at)}"
        )
        if item.replaced:
            line = f":hourglass_flowing_sand: *{esc(item.server_name)}* — {WAITING}"
            blocks.append(section(line))
            continue
        if case.status == "open":
            blocks.append(
                {
                    "type": "section",
                    "block_id": f"item:{item.item_id}",
                    "text": {"type": "mrkdwn", "text": line},
                    "accessory": button("Rotate", ROTATE, str(item.token_id), "primary"),
                }
            )
        else:
            blocks.append(section(line))
    if len(items) > len(shown):
        blocks.append(section(f"…and {len(items) - len(shown)} more; use `/mdm list`."))
    blocks.append(context(_footer(case, now)))
    return blocks


def _footer(case: CaseView, now: datetime) -> str:
    if case.status == "done":
        return f":white_check_mark: Done — every token has been rotated. Updated {stamp(now)}."
    if case.status == "cancelled":
        return f"Cancelled: {mention(case.person_id)} was reactivated. Updated {stamp(now)}."
    return (
        f"{len(case.left)} of {len(case.items)} left · opened {stamp(case.opened_at)} · "
        "reposted daily until done"
    )
