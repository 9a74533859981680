"""Pure Block Kit builders for expiry alerts and rotation checklists (50 blocks a message)."""

from __future__ import annotations

from datetime import datetime

from bot.slack.builders.blocks import (
    MAX_MESSAGE_BLOCKS,
    Block,
    Install,
    button,
    context,
    days_until,
    esc,
    file_holder,
    install_words,
    local_date,
    local_time,
    mention,
    plain,
    plural,
    section,
)
from bot.slack.builders.home_blocks import person_name, resend_button
from core.people.alerts import DueAlert, StaleAlert
from core.people.rotation import CaseView, ItemView

RENEW = "renew_token"
WAITING = "replaced, waiting for the MDM server to use the new token"
ROTATE = "rotate_token"
REASON_TEXT = {
    "departure": "left the organisation",
    "password_change": "changed their Managed Apple Account password",
}


def _who(user_id: str, name: str | None) -> str:
    """A person once: a mention for Slack ids (Slack shows the name), else the name."""
    if user_id[:1] in "UW" and user_id.isalnum():
        return mention(user_id)
    return esc(name or user_id)


def alert_headline(alert: DueAlert, now: datetime) -> str:
    """The one-line summary of an expiry alert (plain text)."""
    if alert.threshold == 0 or alert.expires_at <= now:
        return f"The server token for {alert.server_name} has expired"
    left = plural(days_until(alert.expires_at, now), "day")
    return f"The server token for {alert.server_name} expires in {left}"


def alert_text(alert: DueAlert, now: datetime) -> str:
    """The notification text of an alert, escaped like the blocks."""
    return esc(alert_headline(alert, now))


def alert_blocks(alert: DueAlert, now: datetime) -> list[Block]:
    """An expiry alert with a "Renew token" button (its value is only the token id)."""
    if alert.threshold == 0 or alert.expires_at <= now:
        when = (
            f":red_circle: *Expired* {local_time(alert.expires_at)}. Enrolment through this "
            "server has stopped until a renewed token is uploaded to it."
        )
    else:
        left = plural(days_until(alert.expires_at, now), "day")
        when = f":large_yellow_circle: Expires *{local_time(alert.expires_at)}*, in {left}."
    return [
        {"type": "header", "text": plain(alert_headline(alert, now), 150)},
        section(
            f"*MDM server:* {esc(alert.server_name)}\n{when}\n"
            f"*Downloaded by:* {_who(alert.downloaded_by, alert.downloaded_by_name)} "
            f"{local_date(alert.issued_at)}"
        ),
        {
            "type": "actions",
            "block_id": f"alert:{alert.token_id}",
            "elements": [button("Renew token", RENEW, str(alert.token_id), "primary")],
        },
        context(
            "Renewing DMs a new token to you; the current one stops working as soon as the new "
            "one is active, so upload it to the MDM server straight away."
        ),
    ]


def _replaced_by(stale: StaleAlert) -> str:
    who = stale.by or "someone"
    if who.startswith("operator:"):
        return f"{esc(who.removeprefix('operator:'))} (command line)"
    return mention(who)


def alert_replaced_text(stale: StaleAlert) -> str:
    """The notification text of an alert whose token was replaced."""
    return esc(alert_replaced_headline(stale))


def alert_install_state(stale: StaleAlert) -> Install:
    """Where the token that replaced the alert's token stands with the MDM server."""
    if stale.new_token_id is None:
        return Install.NO_TOKEN
    return Install.IN_USE if stale.new_installed_at is not None else Install.OLD_TOKEN


def alert_replaced_blocks(stale: StaleAlert) -> list[Block]:
    """An alert after its token was replaced: what is left to do until the new one is in use."""
    name, who, when = esc(stale.server_name), _replaced_by(stale), local_time(stale.at)
    how = "replaced the certificate of" if stale.reason == "certificate replaced" else "renewed"
    state = alert_install_state(stale)
    about = f"This alert was about the token that expires {local_date(stale.expires_at)}"
    buttons: list[Block] = []
    if stale.reason == "server removed":
        line = f":wastebasket: {who} removed *{name}* from mdmbot {when}; its token was revoked."
        footer = f"{about}; nothing is left to do here."
    elif state is Install.IN_USE:
        words = install_words(state, stale.new_downloaded_by, stale.new_installed_at)
        line = f":white_check_mark: {words[:1].upper()}{words[1:]}: {who} {how} *{name}* {when}."
        if stale.new_expires_at is not None:
            line += f" The new token expires {local_date(stale.new_expires_at)}."
        footer = f"{about}; nothing is left to do here."
    else:
        done = "Certificate replaced" if stale.reason == "certificate replaced" else "Renewed"
        footer = f"{about}. It turns ✅ when the MDM server first uses the new token."
        if stale.install_note:
            line = f":hourglass_flowing_sand: {done} by {who} {when}: *{name}*. "
            line += f"{esc(stale.install_note).removesuffix('.')}."
        else:
            words = install_words(Install.OLD_TOKEN, stale.new_downloaded_by)
            line = (
                f":hourglass_flowing_sand: {done} by {who} {when}: *{name}* is {words}. "
                "The old token no longer works, so the server cannot enrol or sync devices "
                "until then."
            )
        sent = file_holder(stale.new_downloaded_by).endswith("DMs")
        if stale.install_note and not stale.install_note.startswith("Install failed"):
            sent = False  # installed (or being installed) through the connection: no file sent
        if stale.new_token_id is not None and sent:
            buttons.append(resend_button(stale.new_token_id))
    blocks = [{"type": "header", "text": plain(alert_replaced_headline(stale), 150)}, section(line)]
    if buttons:
        blocks.append({"type": "actions", "block_id": "resend", "elements": buttons})
    return [*blocks, context(footer)]


def alert_replaced_headline(stale: StaleAlert) -> str:
    """The header of a replaced alert (plain text): what is left, or that nothing is."""
    if stale.reason == "server removed":
        return f"Removed: {stale.server_name}"
    if alert_install_state(stale) is Install.IN_USE:
        return f"Renewed and in use: {stale.server_name}"
    if stale.install_note and stale.install_note.startswith("Installed"):
        return f"Renewed and installed: {stale.server_name}"
    if stale.install_note:
        return f"Renewed: {stale.server_name} — installing the new token"
    return f"Renewed: {stale.server_name} — upload the new token"


def checklist_headline(case: CaseView) -> str:
    """The checklist header as a sentence: name, then email in parentheses (plain text)."""
    who = case.person_name or "Someone"
    if case.person_email:
        who += f" ({case.person_email})"
    return f"{who} {REASON_TEXT.get(case.reason, case.reason)}"


WHY_SHORT = {"departure": "left", "password_change": "changed their password"}


def checklist_text(case: CaseView) -> str:
    """The notification text of a checklist (why, then what to do), escaped like the blocks."""
    who = case.person_name or "someone"
    if case.status == "done":
        return esc(f"Every server token downloaded by {who} has been renewed")
    if case.status == "cancelled":
        return esc(f"Renewal of {who}'s server tokens cancelled")
    why = WHY_SHORT.get(case.reason, case.reason)
    return esc(f"{who} {why} — renew {plural(len(case.left), 'server token')}")


def checklist_blocks(case: CaseView, now: datetime) -> list[Block]:
    """The rotation checklist: one line per token, "Renew token" on each one left."""
    blocks: list[Block] = [
        {"type": "header", "text": plain(checklist_headline(case), 150)},
        section(
            "Apple requires every server token they downloaded to be renewed. Each keeps working "
            "until it is renewed here, so enrolment is not interrupted."
        ),
    ]
    room = MAX_MESSAGE_BLOCKS - len(blocks) - 2
    items = list(case.items)
    shown = items[:room]
    first_left = next((i.item_id for i in shown if i.done_at is None), None)
    for item in shown:
        if item.done_at is not None:
            blocks.append(
                section(
                    f":white_check_mark: *{esc(item.server_name)}* — renewed by "
                    f"{mention(item.done_by)} {local_time(item.done_at)}"
                )
            )
            continue
        got = f"downloaded {local_date(item.issued_at)}" if item.issued_at else "downloaded"
        if item.expires_at <= now:
            got += f"; token *expired* {local_date(item.expires_at)}"
        line = f":arrows_counterclockwise: *{esc(item.server_name)}* — {got}"
        if item.replaced:
            line = f":hourglass_flowing_sand: *{esc(item.server_name)}* — {WAITING}"
            blocks.append(section(line))
            continue
        if case.status == "open":
            style = "primary" if item.item_id == first_left else None
            blocks.append(
                {
                    "type": "section",
                    "block_id": f"item:{item.item_id}",
                    "text": {"type": "mrkdwn", "text": line},
                    "accessory": button("Renew token", ROTATE, str(item.token_id), style),
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
        return f":white_check_mark: Done: every token has been renewed. Updated {local_time(now)}."
    if case.status == "cancelled":
        return f"Cancelled: {person_name(case)} was reactivated. Updated {local_time(now)}."
    return (
        f"{len(case.left)} of {len(case.items)} left · opened {local_date(case.opened_at)} · "
        "a reminder goes in this thread daily until done"
    )


def server_names(items: tuple[ItemView, ...], shown: int = 10) -> str:
    """`*A*, *B* and *C*` (at most `shown` names, then how many more)."""
    names = [f"*{esc(item.server_name)}*" for item in items[:shown]]
    if len(items) > shown:
        names.append(f"{len(items) - shown} more")
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def reminder_text(case: CaseView, now: datetime, link: str | None = None) -> str:
    """The daily reminder in the checklist's thread, naming the servers left (no buttons)."""
    left = plural(len(case.left), "server token")
    lead = ":warning: *Overdue:* " if case.overdue(now) else "Reminder: "
    where = f"<{link}|Open the checklist>" if link else "Use the buttons in the checklist above."
    return (
        f"{lead}{left} downloaded by {person_name(case)} still "
        f"need{'s' if len(case.left) == 1 else ''} renewing: {server_names(case.left)} "
        f"(checklist opened {local_date(case.opened_at)}). {where}"
    )
