"""Pure Block Kit builders for messages and the App Home."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.roles import Permission, Role, allows
from core.servers import ServerView

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
STATE_ICONS = {"ok": "🟢", "expiring": "🟡", "expired": "🔴", "no token": "⚪️"}


def esc(text: str) -> str:
    """Escape user-controlled text for mrkdwn (Slack: escape &, < and >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def day(moment: datetime | None) -> str:
    """A date as users read it."""
    return moment.strftime("%-d %b %Y") if moment else "—"


def stamp(moment: datetime) -> str:
    """A UTC timestamp."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


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
    days = view.days_left(now)
    if days is None:
        return "no active token"
    if days < 0:
        return f"token *expired* {day(view.token_expires_at)}"
    return f"token expires {day(view.token_expires_at)} ({days} day{'s' if days != 1 else ''})"


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
    return f"installed {day(view.token_installed_at)}" + (
        f", last seen {stamp(seen)}" if seen else ""
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
        f"*Token expires*\n{day(view.token_expires_at)}",
        f"*Downloaded by*\n{mention(view.downloaded_by)}",
        f"*MDM server*\n{install_phrase(view)}",
        f"*Certificate*\n{esc(view.certificate_subject or '—')}",
        f"*Certificate expires*\n{day(view.certificate_not_after)}",
    ]
    return [
        {"type": "header", "text": plain(view.name, 150)},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]},
        context(f"Added by {mention(view.created_by)} on {day(view.created_at)}"),
    ]


def server_actions(view: ServerView) -> Block:
    """The buttons acting on one server (values carry only the server id)."""
    value = str(view.id)
    return {
        "type": "actions",
        "block_id": f"server:{view.id}",
        "elements": [
            button("New token", "server_token", value, "primary"),
            button("Replace certificate", "server_cert", value),
            button("Edit", "server_edit", value),
            button("Remove", "server_remove", value, "danger"),
        ],
    }


def home_view(
    views: list[ServerView],
    now: datetime,
    role: Role | None,
    device_counts: dict[int, int] | None = None,
) -> dict[str, Any]:
    """The App Home tab: every server with its token state, devices and actions (role holders)."""
    counts = device_counts or {}
    blocks: list[Block] = [{"type": "header", "text": plain("MDM servers", 150)}]
    if not allows(role, Permission.VIEW):
        blocks.append(
            section(
                "mdmbot links MDM servers in Apple School Manager and keeps their tokens alive. "
                "You don't have an mdmbot role; ask an Administrator to run `/mdm grant`."
            )
        )
        return {"type": "home", "blocks": blocks}
    blocks.append(
        {
            "type": "actions",
            "block_id": "home",
            "elements": [button("Add MDM server", "home_add", "add", "primary")],
        }
    )
    if not views:
        blocks.append(section("No MDM servers are linked yet."))
    room = (MAX_HOME_BLOCKS - len(blocks) - 2) // 3
    for view in views[:room]:
        n = counts.get(view.id, 0)
        line = f"{server_line(view, now)} · {n} device{'s' if n != 1 else ''}"
        if view.token_id is not None:
            line += f"\n{install_phrase(view)}"
        blocks += [section(line), server_actions(view), {"type": "divider"}]
    if len(views) > room:
        blocks.append(section(f"…and {len(views) - room} more. Use `/mdm list` to see them all."))
    blocks.append(context(f"🟢 ok · 🟡 expires within 30 days · 🔴 expired · updated {stamp(now)}"))
    return {"type": "home", "blocks": blocks}


def token_comment(
    server_name: str,
    expires_at: datetime,
    warnings: tuple[str, ...] = (),
    *,
    replaces_active: bool = False,
) -> str:
    """The message that goes with a token file in the requester's DM."""
    upload = "Upload this file to the MDM server (where it asks for the Apple server token)"
    if replaces_active:
        upload += " now: the previous token for this server has stopped working."
    else:
        upload += ", then assign devices to this server in Apple School Manager."
    lines = [
        f"Here is the new server token for *{esc(server_name)}*.",
        upload,
        f"It expires on *{day(expires_at)}* ({stamp(expires_at)}); mdmbot will remind the team "
        "well before then.",
        "Keep the file private: with the server's private key it lets anyone act as this MDM "
        "server.",
    ]
    lines += [f":warning: {esc(w)}" for w in warnings]
    return "\n".join(lines)


def help_blocks(role: Role | None) -> list[Block]:
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
    who = f"Your role: *{role.value}*." if role else "You don't have an mdmbot role yet."
    return [section("\n".join(lines)), context(who)]
