"""Pure Block Kit builders for messages and the App Home."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from core.people.persons import RoleHolder
from core.people.rotation import CaseView
from core.roles import Permission, Role, allows
from core.tokens.servers import ServerView

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
STATE_ICONS = {"ok": "🟢", "expiring": "🟡", "expired": "🔴", "no token": "⚪️"}


def esc(text: str) -> str:
    """Escape user-controlled text for mrkdwn (Slack: escape &, < and >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_message(text: str) -> str:
    """A core message for mrkdwn: escaped like any user text, its user mentions (<@U…>) kept."""
    return _ESCAPED_MENTION.sub(r"<@\1>", esc(text))


_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def day(moment: datetime | None) -> str:
    """A date as users read it (plain text: headers, buttons, fallbacks)."""
    return moment.strftime("%-d %b %Y") if moment else "—"


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
    return max(0, math.ceil((expires_at - now) / timedelta(days=1)))


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 token`, `2 tokens`."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def mention(user_id: str | None) -> str:
    """A Slack mention for user ids, the plain label otherwise."""
    if user_id and user_id[:1] in "UW" and user_id.isalnum():
        return f"<@{user_id}>"
    return esc(user_id or "—")


def section(text: str) -> Block:
    """A mrkdwn section (text cut to Slack's 3000-character limit)."""
    if len(text) > MAX_SECTION_TEXT:
        text = text[: MAX_SECTION_TEXT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


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
    """A small grey mrkdwn line."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:MAX_SECTION_TEXT]}]}


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


def server_line(view: ServerView, now: datetime) -> str:
    """One server on one line."""
    release = "" if view.release_devices else " · releases off"
    return (
        f"{STATE_ICONS[view.state(now)]} *{esc(view.name)}* — {expiry_phrase(view, now)}{release}"
    )


def install_phrase(view: ServerView) -> str:
    """Whether the MDM server has used its token ("installed …" / "not installed yet")."""
    if view.token_id is None:
        return "—"
    if view.token_installed_at is None:
        return "not installed yet"
    seen = view.token_last_used_at
    return f"installed {local_date(view.token_installed_at)}" + (
        f", last seen {local_time(seen)}" if seen else ""
    )


def server_list_blocks(views: list[ServerView], now: datetime) -> list[Block]:
    """The `/mdm list` reply, packing lines into as few sections as fit."""
    if not views:
        return [section("No MDM servers are linked yet. Add one with `/mdm add`.")]
    blocks: list[Block] = [section(f"*MDM servers ({len(views)})*")]
    chunk = ""
    for view in views:
        line = server_line(view, now)
        if len(chunk) + len(line) + 1 > MAX_SECTION_TEXT:
            blocks.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    blocks.append(section(chunk))
    return blocks[:MAX_MESSAGE_BLOCKS]


def server_detail_blocks(view: ServerView, now: datetime) -> list[Block]:
    """The `/mdm show NAME` reply."""
    fields = [
        f"*State*\n{STATE_ICONS[view.state(now)]} {view.state(now)}",
        f"*Release devices*\n{'allowed' if view.release_devices else 'not allowed'}",
        f"*Token expires*\n{local_date(view.token_expires_at)}",
        f"*Downloaded by*\n{mention(view.downloaded_by)}",
        f"*MDM server*\n{install_phrase(view)}",
        f"*Certificate*\n{esc(view.certificate_subject or '—')}",
        f"*Certificate expires*\n{local_date(view.certificate_not_after)}",
    ]
    return [
        {"type": "header", "text": plain(view.name, 150)},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]},
        context(f"Added by {mention(view.created_by)} {local_date(view.created_at)}"),
    ]


URGENCY = {"expired": 0, "expiring": 1, "no token": 2, "ok": 3}
MORE = "server_more"
MORE_OPTIONS = (
    ("Edit", "server_edit"),
    ("Replace certificate", "server_cert"),
    ("Remove", "server_remove"),
)


def by_urgency(views: Sequence[ServerView], now: datetime) -> list[ServerView]:
    """Expired first, then expiring, then servers without a token, then the rest."""
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(
        views,
        key=lambda v: (URGENCY[v.state(now)], v.token_expires_at or far, v.name.casefold()),
    )


def server_actions(view: ServerView, urgent: bool = False) -> Block:
    """Renew token (primary only when the server needs it) and an overflow of the rest."""
    value = str(view.id)
    more: Block = {
        "type": "overflow",
        "action_id": MORE,
        "options": [
            {"text": plain(label), "value": f"{action}:{value}"} for label, action in MORE_OPTIONS
        ],
    }
    renew = button("Renew token", "server_token", value, "primary" if urgent else None)
    return {"type": "actions", "block_id": f"server:{view.id}", "elements": [renew, more]}


def server_home_text(view: ServerView, now: datetime, devices: int = 0) -> str:
    """A server as the App Home shows it: state, expiry, devices, who downloaded the token."""
    text = f"{server_line(view, now)} · {plural(devices, 'device')}"
    if view.downloaded_by and view.token_issued_at:
        text += f"\nDownloaded by {mention(view.downloaded_by)} {local_date(view.token_issued_at)}"
    if view.token_id is not None:
        text += f"\n{install_phrase(view)}"
    return text


def case_home_line(case: CaseView) -> str:
    """An open rotation checklist at the top of the App Home."""
    where = f" — checklist in <#{case.channel}>" if case.channel else ""
    left = plural(len(case.left), "token")
    why = "left" if case.reason == "departure" else "changed their password"
    return f":arrows_counterclockwise: *{left} to renew*: {person_name(case)} {why}{where}"


def person_name(case: CaseView) -> str:
    """The person of a case in mrkdwn, never a raw user id nor the name twice."""
    if case.person_id[:1] in "UW" and case.person_id.isalnum():
        return mention(case.person_id)
    return esc(case.person_name or "someone")


def ask_admins(admins: Sequence[RoleHolder]) -> str:
    """Whom someone without a role asks for one: the Administrators, by name."""
    if not admins:
        return "Nobody is an Administrator yet: whoever runs mdmbot sets `MDMBOT_ADMINS`."
    names = ", ".join(mention(a.slack_id) for a in admins[:10])
    more = f" and {len(admins) - 10} more" if len(admins) > 10 else ""
    return f"Ask an Administrator ({names}{more}) to run `/mdm grant @you ROLE`."


def no_role_text(admins: Sequence[RoleHolder]) -> str:
    """What someone without a role reads on the App Home."""
    return (
        "mdmbot links MDM servers in Apple School Manager and keeps their tokens alive. "
        f"You don't have an mdmbot role yet. {ask_admins(admins)}"
    )


def home_view(
    views: list[ServerView],
    now: datetime,
    role: Role | None,
    *,
    cases: Sequence[CaseView] = (),
    admins: Sequence[RoleHolder] = (),
    device_counts: dict[int, int] | None = None,
) -> dict[str, Any]:
    """The App Home tab: open checklists, then servers most urgent first, for role holders."""
    counts = device_counts or {}
    blocks: list[Block] = [{"type": "header", "text": plain("MDM servers", 150)}]
    if not allows(role, Permission.VIEW):
        blocks.append(section(no_role_text(admins)))
        return {"type": "home", "blocks": blocks}
    blocks.append(
        {
            "type": "actions",
            "block_id": "home",
            "elements": [button("Add MDM server", "home_add", "add")],
        }
    )
    for case in cases[:10]:
        blocks.append(section(case_home_line(case)))
    if cases:
        blocks.append({"type": "divider"})
    if not views:
        blocks.append(section("No MDM servers are linked yet."))
    room = (MAX_HOME_BLOCKS - len(blocks) - 2) // 3
    ordered = by_urgency(views, now)
    for view in ordered[:room]:
        urgent = view.state(now) != "ok"
        blocks += [
            section(server_home_text(view, now, counts.get(view.id, 0))),
            server_actions(view, urgent),
            {"type": "divider"},
        ]
    if len(views) > room:
        blocks.append(section(f"…and {len(views) - room} more. Use `/mdm list` to see them all."))
    blocks.append(
        context(
            "🔴 expired · 🟡 expires within 30 days · ⚪️ no token · 🟢 ok · "
            f"updated {local_time(now)}"
        )
    )
    return {"type": "home", "blocks": blocks}


def token_comment(
    server_name: str,
    expires_at: datetime,
    warnings: tuple[str, ...] = (),
    *,
    replaces_active: bool = False,
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
    lines += [f":warning: {esc(w)}" for w in warnings]
    return "\n".join(lines)


def help_blocks(role: Role | None, admins: Sequence[RoleHolder] = ()) -> list[Block]:
    """`/mdm help`: what the caller's role allows."""
    lines = [
        "*mdmbot* links MDM servers in Apple School Manager and keeps their tokens alive.",
        "`/mdm list` · `/mdm show NAME` · `/mdm roles` · `/mdm password-changed`",
    ]
    if allows(role, Permission.MANAGE_SERVERS):
        lines.append(
            "`/mdm add` · `/mdm token NAME` · `/mdm cert NAME` · `/mdm edit NAME` · "
            "`/mdm remove NAME` · `/mdm offboard @user`"
        )
    if allows(role, Permission.MANAGE_DEVICES):
        lines.append(
            "`/mdm devices [SERVER]` · `/mdm devices import` · `/mdm assign SERVER` · "
            "`/mdm defaults`"
            + (" · `/mdm release SERIAL…`" if allows(role, Permission.RELEASE_DEVICES) else "")
        )
    if allows(role, Permission.MANAGE_ROLES):
        lines.append(
            "`/mdm grant @user ROLE` · `/mdm revoke @user`  (roles: Administrator, "
            "Site Manager, Device Enrollment Manager)"
        )
    who = (
        f"Your role: *{role.value}*."
        if role
        else f"You don't have an mdmbot role yet. {ask_admins(admins)}"
    )
    return [section("\n".join(lines)), context(who)]
