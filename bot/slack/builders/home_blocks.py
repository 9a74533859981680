"""The App Home tab and `/mdm help`: what is left to do, most urgent first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.slack.builders.api_blocks import api_account_blocks
from bot.slack.builders.blocks import (
    MAX_HOME_BLOCKS,
    OLD_TOKEN,
    STATE_ICONS,
    STATE_KEY,
    Block,
    Install,
    button,
    by_urgency,
    context,
    esc,
    expiry_phrase,
    home_state,
    install_state,
    local_date,
    local_time,
    mention,
    plain,
    plural,
    section,
    view_install_words,
)
from core.asm.accounts import AccountView
from core.people.persons import RoleHolder
from core.people.rotation import CaseView
from core.roles import Permission, Role, allows
from core.tokens.servers import ServerView

MORE = "server_more"
RESEND = "resend_token"
MORE_OPTIONS = (
    ("Edit", "server_edit"),
    ("Replace certificate", "server_cert"),
    ("Remove", "server_remove"),
)
NEEDS_ACTION = {OLD_TOKEN, "expired", "expiring", "no token"}


def resend_button(token_id: int, style: str | None = None) -> Block:
    """"Send me the file again": only whoever downloaded the token may press it."""
    return button("Send me the file again", RESEND, str(token_id), style)


def server_actions(
    view: ServerView, now: datetime, viewer: str | None = None, primary: bool = False
) -> Block:
    """The one button this server's state calls for, and an overflow of the rest."""
    value, state = str(view.id), home_state(view, now)
    style = "primary" if primary else None
    options = list(MORE_OPTIONS)
    elements: list[Block] = []
    upload = state in (OLD_TOKEN, "ok") and install_state(view) is not Install.IN_USE
    if state == "no token":
        elements.append(button("Get token", "server_token", value, style))
    elif upload and view.token_id is not None and viewer and viewer == view.downloaded_by:
        elements.append(resend_button(view.token_id, style))
        options.insert(0, ("Renew token", "server_token"))
    elif state == OLD_TOKEN:
        options.insert(0, ("Renew token", "server_token"))
    else:
        elements.append(button("Renew token", "server_token", value, style))
    elements.append(
        {
            "type": "overflow",
            "action_id": MORE,
            "options": [
                {"text": plain(label), "value": f"{action}:{value}"} for label, action in options
            ],
        }
    )
    return {"type": "actions", "block_id": f"server:{view.id}", "elements": elements}


def server_home_text(view: ServerView, now: datetime, devices: int = 0) -> str:
    """A server on the Home: state, expiry, devices, then where its token stands."""
    state = home_state(view, now)
    release = "" if view.release_devices else " · releases off"
    text = (
        f"{STATE_ICONS[state]} *{esc(view.name)}* — {expiry_phrase(view, now)}{release}"
        f" · {plural(devices, 'device')}"
    )
    if install_state(view) is Install.IN_USE and view.downloaded_by and view.token_issued_at:
        text += f"\nDownloaded by {mention(view.downloaded_by)} {local_date(view.token_issued_at)}"
    if view.token_id is not None:
        words = view_install_words(view)
        text += f"\n*{words[:1].upper()}{words[1:]}*" if state == OLD_TOKEN else f"\n{words}"
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
    viewer: str | None = None,
    cases: Sequence[CaseView] = (),
    admins: Sequence[RoleHolder] = (),
    device_counts: dict[int, int] | None = None,
    api_accounts: Sequence[AccountView] | None = None,
) -> dict[str, Any]:
    """The App Home tab: open checklists, then servers most urgent first, for role holders;
    API accounts at the end for Administrators (`api_accounts` given)."""
    counts = device_counts or {}
    tail = [] if api_accounts is None else api_account_blocks(api_accounts)
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
    room = (MAX_HOME_BLOCKS - len(blocks) - len(tail) - 2) // 3
    ordered = by_urgency(views, now)
    first = next((v.id for v in ordered if home_state(v, now) in NEEDS_ACTION), None)
    for view in ordered[:room]:
        blocks += [
            section(server_home_text(view, now, counts.get(view.id, 0))),
            server_actions(view, now, viewer, primary=view.id == first),
            {"type": "divider"},
        ]
    if len(views) > room:
        blocks.append(section(f"…and {len(views) - room} more. Use `/mdm list` to see them all."))
    blocks += tail
    blocks.append(context(f"{STATE_KEY} · updated {local_time(now)}"))
    return {"type": "home", "blocks": blocks}


HELP: tuple[tuple[str, Permission, tuple[tuple[str, str], ...]], ...] = (
    (
        "See what there is",
        Permission.VIEW,
        (
            ("/mdm list", "every server and its token, most urgent first"),
            ("/mdm show NAME", "one server: its token, certificate and who downloaded it"),
            ("/mdm roles", "who holds which mdmbot role"),
        ),
    ),
    (
        "Servers and tokens",
        Permission.MANAGE_SERVERS,
        (
            ("/mdm add", "link a new MDM server and get its token by DM"),
            ("/mdm token NAME", "renew a server's token, or get its first one"),
            ("/mdm cert NAME", "replace a server's certificate (renews its token)"),
            ("/mdm edit NAME", "rename a server or change whether it may release devices"),
            ("/mdm remove NAME", "unlink a server; its token is revoked"),
        ),
    ),
    (
        "When someone leaves",
        Permission.MANAGE_SERVERS,
        (("/mdm offboard @user", "list the tokens they downloaded, to renew each one"),),
    ),
    (
        "Devices",
        Permission.MANAGE_DEVICES,
        (
            ("/mdm devices [SERVER]", "devices per server, or one server's devices"),
            ("/mdm devices import", "import devices from a CSV file"),
            ("/mdm assign SERVER", "assign devices to a server"),
            ("/mdm defaults", "which server new devices of each kind go to"),
        ),
    ),
    (
        "Devices",
        Permission.RELEASE_DEVICES,
        (("/mdm release SERIAL…", "release devices from the organisation for good"),),
    ),
    (
        "Roles",
        Permission.MANAGE_ROLES,
        (
            (
                "/mdm grant @user ROLE",
                "give a role: Administrator, Site Manager or Device Enrollment Manager",
            ),
            ("/mdm revoke @user", "take someone's role away"),
        ),
    ),
)


def help_text(role: Role | None) -> str:
    """The commands the role allows, grouped by task, one plain line each."""
    lines = [
        "*mdmbot* keeps the MDM servers linked in Apple School Manager and their tokens alive. "
        "Open the *Home* tab of mdmbot to see every server, most urgent first, with its buttons.",
        "",
        "*Your own password*",
        "`/mdm password-changed` — you changed your Managed Apple Account password: renew the "
        "tokens you downloaded",
    ]
    last = ""
    for title, permission, commands in HELP:
        if not allows(role, permission):
            continue
        if title != last:
            lines += ["", f"*{title}*"]
            last = title
        lines += [f"`{command}` — {what}" for command, what in commands]
    lines += ["", "`/mdm help` — this list"]
    return "\n".join(lines)


def help_blocks(role: Role | None, admins: Sequence[RoleHolder] = ()) -> list[Block]:
    """`/mdm help`: what the caller's role allows, grouped by task."""
    who = (
        f"Your role: *{role.value}*."
        if role
        else f"You don't have an mdmbot role yet. {ask_admins(admins)}"
    )
    return [section(help_text(role)), context(who)]
