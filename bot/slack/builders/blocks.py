"""Pure Block Kit builders for messages and the App Home."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_CONTEXT_TEXT = 2000  # Slack: a context block's text element holds at most 2,000 characters
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


def file_holder(user_id: str | None) -> str:
    """Where the token file is: in someone's DMs, or saved by an operator on the command line."""
    if user_id and user_id[:1] in "UW" and user_id.isalnum():
        return f"in {mention(user_id)}'s DMs"
    return f"saved by {esc(user_id or 'someone')} on the command line"


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
        upload += f", then give it devices with `/mdm assign {esc(server_name)}`."
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
