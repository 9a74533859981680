"""Pure Block Kit builders for messages and the App Home."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core.tokens.servers import ServerView

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_CONTEXT_TEXT = 2000  # Slack: a context block's text element holds at most 2,000 characters
OLD_TOKEN = "old token"  # noqa: S105 (a state: the MDM server still has a replaced token)
STATE_ICONS = {OLD_TOKEN: "🔴", "expired": "🔴", "expiring": "🟡", "no token": "⚪️", "ok": "🟢"}
URGENCY = {OLD_TOKEN: 0, "expired": 1, "expiring": 2, "no token": 3, "ok": 4}
STATE_KEY = (
    "🔴 expired, or still using a replaced token · 🟡 expires within 30 days · ⚪️ no token · 🟢 ok"
)
_TOKEN = re.compile(r"<[^<>]*>")


def esc(text: str) -> str:
    """Escape user-controlled text for mrkdwn (Slack: escape &, < and >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_message(text: str) -> str:
    """A core message for mrkdwn: escaped like any user text, its user mentions (<@U…>) kept."""
    return _ESCAPED_MENTION.sub(r"<@\1>", esc(text))


_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ONE_DAY = timedelta(days=1)


def day(moment: datetime | None) -> str:
    """A date as users read it (plain text: headers, buttons, fallbacks), `4 Dec 2026`."""
    return f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}" if moment else "—"


def stamp(moment: datetime) -> str:
    """A UTC timestamp (plain text)."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def local_date(moment: datetime | None) -> str:
    """A date each reader sees in their own time zone (Slack's `<!date>` mrkdwn token)."""
    if moment is None:
        return "—"
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}}|{day(moment)}>"


def local_time(moment: datetime) -> str:
    """A date and time each reader sees in their own time zone (Slack's `<!date>` token)."""
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{stamp(moment)}>"


def days_until(expires_at: datetime, now: datetime) -> int:
    """Whole days left, counting a part day as one (the App Home and alerts agree)."""
    return max(0, math.ceil((expires_at - now) / ONE_DAY))


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 token`, `2 tokens`."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def mention(user_id: str | None) -> str:
    """A Slack mention for user ids, the plain label otherwise."""
    if user_id and user_id[:1] in "UW" and user_id.isalnum():
        return f"<@{user_id}>"
    return esc(user_id or "—")


def cut(text: str, limit: int) -> str:
    """Text within `limit` characters, cut before any `<…>` token the limit would split."""
    if len(text) <= limit:
        return text
    end = limit - 1
    for token in _TOKEN.finditer(text, 0, len(text)):
        if token.start() < end < token.end():
            end = token.start()
            break
    return text[:end] + "…"


def section(text: str) -> Block:
    """A mrkdwn section (text cut to Slack's 3000-character limit)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, MAX_SECTION_TEXT)}}


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    """A plain_text object cut to `limit` characters."""
    return {
        "type": "plain_text",
        "text": text if len(text) <= limit else text[: limit - 1] + "…",
        "emoji": True,
    }


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    """A button (text within Slack's 75-character limit)."""
    element: Block = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        element["style"] = style
    return element


def context(text: str) -> Block:
    """A small grey mrkdwn line (cut to Slack's 2000-character limit)."""
    element = {"type": "mrkdwn", "text": cut(text, MAX_CONTEXT_TEXT)}
    return {"type": "context", "elements": [element]}


def error_blocks(message: str, reference: str | None = None) -> list[Block]:
    """An error shown to one person."""
    blocks = [section(f":warning: {message}")]
    if reference:
        blocks.append(context(f"Reference `{reference}` — give it to whoever runs mdmbot."))
    return blocks


def expiry_phrase(view: ServerView, now: datetime) -> str:
    """How the active token's expiry reads."""
    if view.token_expires_at is None:
        return "no token"
    if view.token_expires_at <= now:
        return f"token *expired* {local_date(view.token_expires_at)}"
    left = plural(days_until(view.token_expires_at, now), "day")
    return f"token expires {local_date(view.token_expires_at)} (in {left})"


class Install(StrEnum):
    """Where a server's active token stands with its MDM server."""

    NO_TOKEN = "no token"  # noqa: S105 (a state, not a password)
    WAITING = "not uploaded"  # a first token its MDM server has not used yet
    OLD_TOKEN = OLD_TOKEN  # renewed, but the MDM server still has the replaced token
    IN_USE = "in use"


def install_state(view: ServerView) -> Install:
    """Whether the MDM server uses the active token (first use is its installation)."""
    if view.token_id is None:
        return Install.NO_TOKEN
    if view.token_installed_at is not None:
        return Install.IN_USE
    return Install.OLD_TOKEN if view.replaced_at is not None else Install.WAITING


def file_holder(user_id: str | None) -> str:
    """Where the token file is: in someone's DMs, or saved by an operator on the command line."""
    if user_id and user_id[:1] in "UW" and user_id.isalnum():
        return f"in {mention(user_id)}'s DMs"
    return f"saved by {esc(user_id or 'someone')} on the command line"


def install_words(
    state: Install,
    holder: str | None,
    since: datetime | None = None,
    seen: datetime | None = None,
) -> str:
    """The one place a token's install state becomes words (Home, lists, alerts, reminders)."""
    if state is Install.IN_USE:
        last = f", last seen {local_time(seen)}" if seen else ""
        return f"in use since {local_date(since)}{last}"
    if state is Install.OLD_TOKEN:
        return f"still using the old token — upload the new file ({file_holder(holder)})"
    if state is Install.WAITING:
        return f"token not yet uploaded to the MDM server ({file_holder(holder)})"
    return "no token yet"


def view_install_words(view: ServerView) -> str:
    """`install_words` for a listed server; a connected server's install state when not in use."""
    state = install_state(view)
    if view.install_note and state in (Install.WAITING, Install.OLD_TOKEN):
        return esc(view.install_note)
    holder, since, seen = view.downloaded_by, view.token_installed_at, view.token_last_used_at
    return install_words(state, holder, since, seen)


def home_state(view: ServerView, now: datetime) -> str:
    """The state the Home and `/mdm list` show: a replaced token still in use comes first."""
    return OLD_TOKEN if install_state(view) is Install.OLD_TOKEN else view.state(now)


def by_urgency(views: Sequence[ServerView], now: datetime) -> list[ServerView]:
    """Old token still in use, expired, expiring, no token, then the rest (soonest first)."""
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(
        views,
        key=lambda v: (URGENCY[home_state(v, now)], v.token_expires_at or far, v.name.casefold()),
    )


def server_line(view: ServerView, now: datetime) -> str:
    """One server on one line."""
    state = home_state(view, now)
    what = view_install_words(view) if state == OLD_TOKEN else expiry_phrase(view, now)
    release = "" if view.release_devices else " · releases off"
    return f"{STATE_ICONS[state]} *{esc(view.name)}* — {what}{release}"


def server_list_blocks(views: list[ServerView], now: datetime) -> list[Block]:
    """The `/mdm list` reply in the Home's order, packing lines into as few sections as fit."""
    if not views:
        return [section("No MDM servers are linked yet. Add one with `/mdm add`.")]
    blocks: list[Block] = [section(f"*MDM servers ({len(views)})*")]
    chunk = ""
    for view in by_urgency(views, now):
        line = server_line(view, now)
        if len(chunk) + len(line) + 1 > MAX_SECTION_TEXT:
            blocks.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    blocks.append(section(chunk))
    return [*blocks[: MAX_MESSAGE_BLOCKS - 1], context(STATE_KEY)]


def server_detail_blocks(view: ServerView, now: datetime) -> list[Block]:
    """The `/mdm show NAME` reply."""
    fields = [
        f"*State*\n{STATE_ICONS[home_state(view, now)]} {home_state(view, now)}",
        f"*Release devices*\n{'allowed' if view.release_devices else 'not allowed'}",
        f"*Token expires*\n{local_date(view.token_expires_at)}",
        f"*Downloaded by*\n{mention(view.downloaded_by)}",
        f"*MDM server*\n{view_install_words(view)}",
        f"*Certificate*\n{esc(view.certificate_subject or '—')}",
        f"*Certificate expires*\n{local_date(view.certificate_not_after)}",
    ]
    return [
        {"type": "header", "text": plain(view.name, 150)},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]},
        context(f"Added by {mention(view.created_by)} {local_date(view.created_at)}"),
    ]


def token_comment(
    server_name: str,
    expires_at: datetime,
    warnings: tuple[str, ...] = (),
    *,
    replaces_active: bool = False,
    certificate_not_after: datetime | None = None,
) -> str:
    """The message that goes with a token file in the requester's DM (sent before activation)."""
    upload = "Upload this file to the MDM server (where it asks for the Apple server token)"
    if replaces_active:
        upload += (
            " now: it replaces the current token, which stops working as soon as this one is "
            "active."
        )
    else:
        upload += ", then assign devices to this server in Apple School Manager."
    lines = [
        f"Here is the new server token for *{esc(server_name)}*.",
        upload,
        f"It expires {local_time(expires_at)}; mdmbot will remind the team well before then.",
        "Keep the file private: with the server's private key it lets anyone act as this MDM "
        "server.",
    ]
    raw = f"{certificate_not_after:%Y-%m-%d}" if certificate_not_after else None
    lines += [
        f":warning: {esc(w).replace(raw, local_date(certificate_not_after)) if raw else esc(w)}"
        for w in warnings
    ]
    return "\n".join(lines)
