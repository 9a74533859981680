"""Pure Block Kit builders for expiry alerts and rotation checklists (50 blocks a message)."""

from __future__ import annotations

from datetime import datetime

from bot.slack.builders import phrases
from bot.slack.builders.blocks import (
    MAX_MESSAGE_BLOCKS,
    Block,
    button,
    context,
    days_until,
    esc,
    local_date,
    local_time,
    mention,
    plain,
    plural,
    section,
)
from bot.slack.builders.home_blocks import person_name
from core.connections.server_state import ServerState, State
from core.people.alerts import DueAlert, StaleAlert
from core.people.rotation import CaseView, ItemView

RENEW = "renew_token"
WAITING = "renewed, waiting for the MDM server's first use"
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


def alert_blocks(alert: DueAlert, now: datetime, st: ServerState | None = None) -> list[Block]:
    """An expiry alert with a "Renew token" button (its value is only the token id)."""
    if alert.threshold == 0 or alert.expires_at <= now:
        until = (
            f"a new token from {st.portal} is taken in"
            if st is not None and st.apple
            else "it has a renewed token"
        )
        when = (
            f":red_circle: *Expired* {local_time(alert.expires_at)}: {phrases.CANNOT_ENROL} "
            f"until {until}."
        )
    else:
        left = plural(days_until(alert.expires_at, now), "day")
        when = f":large_yellow_circle: Expires *{local_time(alert.expires_at)}*, in {left}."
    source = f"Downloaded by {_who(alert.downloaded_by, alert.downloaded_by_name)}"
    if st is not None and (st.connected or st.automatic):
        source = phrases.token_from(st)
    label = "Renew token"
    if st is not None and st.apple:
        label = "Upload token"
        footer = f"To renew, {phrases.GET_FROM_APPLE.format(portal=st.portal)}. The current one "
        footer += f"stops working as soon as {st.portal} issues the new one."
    elif st is not None and st.connected:
        footer = (
            f"Renewing makes a new token and mdmbot installs it into {esc(st.label or '')} "
            "straight away; the current one stops working as soon as the new one is active."
        )
    else:
        footer = (
            "Renewing DMs a new token to you; the current one stops working as soon as the new "
            "one is active, so upload it to the MDM server straight away."
        )
    return [
        {"type": "header", "text": plain(alert_headline(alert, now), 150)},
        section(
            f"*MDM server:* {esc(alert.server_name)}\n{when}\n{source} "
            f"{local_date(alert.issued_at)}"
        ),
        {
            "type": "actions",
            "block_id": f"alert:{alert.token_id}",
            "elements": [button(label, RENEW, str(alert.token_id), "primary")],
        },
        context(footer),
    ]


def alert_replaced_text(stale: StaleAlert, st: ServerState | None = None) -> str:
    """The notification text of an alert whose token was replaced."""
    return esc(alert_replaced_headline(stale, st))


def in_use(st: ServerState | None) -> bool:
    """The server's MDM server uses its active token."""
    return st is not None and st.state in (State.IN_USE, State.EXPIRES_SOON)


def alert_replaced_blocks(stale: StaleAlert, st: ServerState | None = None) -> list[Block]:
    """An alert after its token was replaced: the server's state now, and its one action."""
    name, when = esc(stale.server_name), local_time(stale.at)
    about = f"This alert was about the token that expires {local_date(stale.expires_at)}"
    did = phrases.renewed_by(None, stale.by)
    if stale.reason == "certificate replaced":
        did = did.replace("Renewed", "Certificate replaced", 1)
    buttons: list[Block] = []
    if stale.reason == "server removed" or st is None:
        who = mention(stale.by) if stale.by and not stale.by.startswith("operator:") else esc(
            (stale.by or "someone").removeprefix("operator:")
        )
        line = f":wastebasket: {who} removed *{name}* from mdmbot {when}; its token was revoked."
        footer = f"{about}; nothing is left to do here."
    elif in_use(st):
        line = f":white_check_mark: {did} {when}: {phrases.problem(stale.server_name, st)}"
        if stale.new_expires_at is not None:
            line += f" The new token expires {local_date(stale.new_expires_at)}."
        footer = f"{about}; nothing is left to do here."
    else:
        line = f"{did} {when}.\n{phrases.sentence(stale.server_name, st)}"
        footer = f"{about}. It turns ✅ when the MDM server first uses the new token."
        found = phrases.action_button(st, stale.server_id, stale.new_token_id)
        todo = phrases.action(st)
        if found is not None and todo is not None and todo.action_id != phrases.RENEW:
            buttons.append(found)
            if todo.holder:
                footer = f"Only {mention(todo.holder)} can get the file again. {footer}"
    header = alert_replaced_headline(stale, st)
    blocks = [{"type": "header", "text": plain(header, 150)}, section(line)]
    if buttons:
        blocks.append({"type": "actions", "block_id": "state_action", "elements": buttons})
    return [*blocks, context(footer)]


def alert_replaced_headline(stale: StaleAlert, st: ServerState | None = None) -> str:
    """The header of a replaced alert (plain text): what is left, or that nothing is."""
    if stale.reason == "server removed" or st is None:
        return f"Removed: {stale.server_name}"
    if in_use(st):
        return f"Renewed and in use: {stale.server_name}"
    return f"Renewed: {stale.server_name} — {phrases.word(st)}"


def checklist_headline(case: CaseView) -> str:
    """The checklist header as a sentence: name, then email in parentheses (plain text)."""
    who = case.person_name or "Someone"
    if case.person_email:
        who += f" ({case.person_email})"
    return f"{who} {REASON_TEXT.get(case.reason, case.reason)}"


OLDER_REMINDER = "Superseded by a newer reminder below."
WHY_SHORT = {"departure": "left", "password_change": "changed their password"}


def checklist_text(case: CaseView, *, portal: str | None = None) -> str:
    """The notification text of a checklist (why, then what to do), escaped like the blocks; in
    Apple mode the tokens come from Apple's `portal`."""
    who = case.person_name or "someone"
    if case.status == "done":
        return esc(f"Every server token downloaded by {who} has been renewed")
    if case.status == "cancelled":
        return esc(f"Renewal of {who}'s server tokens cancelled")
    why = WHY_SHORT.get(case.reason, case.reason)
    renew = to_renew(case)
    if not renew:
        return esc(f"{who} {why} — {plural(len(case.left), 'renewed token')} waiting for first use")
    if portal:
        tokens = plural(len(renew), "new server token")
        return esc(f"{who} {why} — get {tokens} from {portal}")
    return esc(f"{who} {why} — renew {plural(len(renew), 'server token')}")


def checklist_blocks(
    case: CaseView,
    now: datetime,
    states: dict[int, ServerState] | None = None,
    *,
    portal: str | None = None,
) -> list[Block]:
    """The rotation checklist: one line per token, "Renew token" on each one left; a renewed
    one shows its server's state (`states`, by the item's token) until its first use. In Apple
    mode each asks for a new token from Apple's `portal` ("Upload token")."""
    blocks: list[Block] = [
        {"type": "header", "text": plain(checklist_headline(case), 150)},
        section(
            "Apple requires every server token they downloaded to be replaced. Each keeps "
            f"working until a new one from {portal} is taken in here, so enrolment "
            "is not interrupted."
            if portal
            else "Apple requires every server token they downloaded to be renewed. Each keeps "
            "working until it is renewed here, so enrolment is not interrupted."
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
            blocks.append(section(waiting_line(item, (states or {}).get(item.token_id))))
            continue
        if case.status == "open":
            style = "primary" if item.item_id == first_left else None
            label = "Upload token" if portal else "Renew token"
            if portal:
                line += f"\nGet a new token from {portal} and drop it in mdmbot's DM."
            blocks.append(
                {
                    "type": "section",
                    "block_id": f"item:{item.item_id}",
                    "text": {"type": "mrkdwn", "text": line},
                    "accessory": button(label, ROTATE, str(item.token_id), style),
                }
            )
        else:
            blocks.append(section(line))
    if len(items) > len(shown):
        blocks.append(section(f"…and {len(items) - len(shown)} more; use `/mdm list`."))
    blocks.append(context(_footer(case, now)))
    return blocks


def waiting_line(item: ItemView, st: ServerState | None) -> str:
    """A renewed item whose new token is not in use yet: the server's state and who acts."""
    if st is None:
        return f":hourglass_flowing_sand: *{esc(item.server_name)}* — {WAITING}"
    who = phrases.who_acts(st)
    return f"{phrases.line(item.server_name, st)}" + (f"\n{who}" if who else "")


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


def to_renew(case: CaseView) -> tuple[ItemView, ...]:
    """Items whose token still has to be renewed (not those renewed and waiting for use)."""
    return tuple(item for item in case.left if not item.replaced)


def reminder_text(
    case: CaseView,
    now: datetime,
    link: str | None = None,
    states: dict[int, ServerState] | None = None,
) -> str:
    """The daily reminder in the checklist's thread: what is left to renew, what waits on use."""
    if case.status != "open" or not case.left:
        return f":white_check_mark: Done: the checklist of {person_name(case)} is closed."
    renew, waiting = to_renew(case), [i for i in case.left if i.replaced]
    lead = ":warning: *Overdue:* " if case.overdue(now) else "Reminder: "
    where = f"<{link}|Open the checklist>" if link else "Use the buttons in the checklist above."
    parts = []
    if renew:
        parts.append(
            f"{plural(len(renew), 'server token')} downloaded by {person_name(case)} still "
            f"need{'s' if len(renew) == 1 else ''} renewing: {server_names(renew)}"
        )
    for item in waiting[:10]:
        st = (states or {}).get(item.token_id)
        what = phrases.word(st) if st else WAITING
        parts.append(f"*{esc(item.server_name)}* is renewed, {what}")
    opened = f"(checklist opened {local_date(case.opened_at)})"
    return f"{lead}{'; '.join(parts)} {opened}. {where}"
