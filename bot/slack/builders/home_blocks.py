"""The App Home tab and `/mdm help`: what is left to do, most urgent first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.slack.builders import phrases
from bot.slack.builders.api_blocks import api_account_blocks
from bot.slack.builders.blocks import (
    MAX_HOME_BLOCKS,
    Block,
    button,
    context,
    esc,
    local_time,
    mention,
    plain,
    plural,
    section,
)
from bot.slack.builders.server_blocks import MORE, healthy_row, waiting_row
from core.apple.status import SyncHealth
from core.asm.accounts import AccountView
from core.connections.server_state import by_urgency
from core.people.persons import RoleHolder
from core.people.rotation import CaseView
from core.roles import Permission, Role, allows
from core.settings import SCHOOL_PORTAL
from core.tokens.servers import ServerView

__all__ = ["MORE", "RESEND", "home_view", "resend_button"]
RESEND = phrases.RESEND


def resend_button(token_id: int, style: str | None = None) -> Block:
    """"Send me the file again": only whoever downloaded the token may press it."""
    return button("Send me the file again", RESEND, str(token_id), style)


def case_home_line(case: CaseView) -> str:
    """An open rotation checklist at the top of the App Home."""
    where = f" — checklist in <#{case.channel}>" if case.channel else ""
    renew = [item for item in case.left if not item.replaced]
    why = "left" if case.reason == "departure" else "changed their password"
    who = f"{person_name(case)} {why}{where}"
    if not renew:
        waiting = plural(len(case.left), "renewed token")
        return f":hourglass_flowing_sand: *{waiting} waiting for first use*: {who}"
    return f":arrows_counterclockwise: *{plural(len(renew), 'token')} to renew*: {who}"


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


def no_role_text(admins: Sequence[RoleHolder], portal: str | None = None) -> str:
    """What someone without a role reads on the App Home (`portal`: Apple's, in Apple mode)."""
    return (
        f"mdmbot links MDM servers in {portal or SCHOOL_PORTAL} and keeps their tokens alive. "
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
    apple: SyncHealth | None = None,
    portal: str | None = None,
) -> dict[str, Any]:
    """The App Home tab: open checklists, servers waiting on someone, then one line per other;
    API accounts at the end for Administrators (`api_accounts` given); `portal` names Apple's
    portal in Apple mode."""
    counts = device_counts or {}
    tail = [] if api_accounts is None else api_account_blocks(api_accounts)
    blocks: list[Block] = [{"type": "header", "text": plain("MDM servers", 150)}]
    if not allows(role, Permission.VIEW):
        blocks.append(section(no_role_text(admins, portal)))
        return {"type": "home", "blocks": blocks}
    blocks.append(
        {
            "type": "actions",
            "block_id": "home",
            "elements": [button("Add MDM server", "home_add", "add")],
        }
    )
    if apple is not None and apple.failing_kind:
        blocks.append(section(phrases.apple_sync_problem(
            apple.failing_kind, apple.failing_message or "", apple.failing_since,
            apple.last_success_at, portal or SCHOOL_PORTAL,
        )))  # fmt: skip
    for refused in apple.refused[:5] if apple is not None else ():
        blocks.append(section(phrases.token_refused(refused)))
    for case in cases[:10]:
        blocks.append(section(case_home_line(case)))
    if cases:
        blocks.append({"type": "divider"})
    if not views:
        blocks.append(section("No MDM servers are linked yet."))
    ordered = by_urgency(views, now, portal or SCHOOL_PORTAL)
    waiting = [(v, st) for v, st in ordered if st.needs_action]
    others = [(v, st) for v, st in ordered if not st.needs_action]
    room = MAX_HOME_BLOCKS - len(blocks) - len(tail) - 4
    shown = 0
    if waiting:
        blocks.append(section(f"*Waiting on you ({len(waiting)})*"))
    for index, (view, st) in enumerate(waiting):
        if room < 2:
            break
        blocks += waiting_row(view, st, viewer, index == 0, counts.get(view.id, 0))
        room, shown = room - 2, shown + 1
    if others and room > 1:
        blocks.append({"type": "divider"})
        room -= 1
    for view, st in others:
        if room < 1:
            break
        blocks.append(healthy_row(view, st, counts.get(view.id, 0)))
        room, shown = room - 1, shown + 1
    if len(views) > shown:
        blocks.append(section(f"…and {len(views) - shown} more. Use `/mdm list` to see them all."))
    blocks += tail
    blocks.append(context(f"{phrases.KEY} · updated {local_time(now)}"))
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


# Apple mode (DESIGN.md §1a): what a command does there ("{portal}": Apple's portal); None: the
# command is refused there, so help leaves it out.
HELP_APPLE: dict[str, str | None] = {
    "/mdm add": "link an MDM server of {portal}: its certificate and the steps there",
    "/mdm token NAME": "upload a server's token downloaded from {portal} (or drop the .p7m file "
    "in a DM with mdmbot)",
    "/mdm cert NAME": None,
    "/mdm edit NAME": "change a server {portal} has not listed yet (Apple's servers change there)",
    "/mdm remove NAME": "unlink a server {portal} has not listed yet",
    "/mdm offboard @user": "list the tokens they downloaded, to replace each from {portal}",
    "/mdm devices [SERVER]": "devices per server, as {portal} shows them",
    "/mdm devices import": None,
    "/mdm assign SERVER": "assign devices to a server through {portal}",
    "/mdm defaults": None,
    "/mdm release SERIAL…": None,
}


def help_text(role: Role | None, portal: str | None = None) -> str:
    """The commands the role allows, grouped by task, one plain line each; in Apple mode
    (`portal`: Apple's portal) only those that work there, in its words."""
    renew = (
        f"replace the tokens you downloaded from {portal}"
        if portal
        else "renew the tokens you downloaded"
    )
    lines = [
        f"*mdmbot* keeps the MDM servers linked in {portal or SCHOOL_PORTAL} and their "
        "tokens alive. Open the *Home* tab of mdmbot to see every server, most urgent first, "
        "with its buttons.",
        "",
        "*Your own password*",
        f"`/mdm password-changed` — you changed your Managed Apple Account password: {renew}",
    ]
    last = ""
    for title, permission, commands in HELP:
        if not allows(role, permission):
            continue
        shown = [(c, HELP_APPLE.get(c, what) if portal else what) for c, what in commands]
        shown = [(c, what.format(portal=portal)) for c, what in shown if what is not None]
        if not shown:
            continue
        if title != last:
            lines += ["", f"*{title}*"]
            last = title
        lines += [f"`{command}` — {what}" for command, what in shown]
    lines += ["", "`/mdm help` — this list"]
    return "\n".join(lines)


def help_blocks(
    role: Role | None, admins: Sequence[RoleHolder] = (), portal: str | None = None
) -> list[Block]:
    """`/mdm help`: what the caller's role allows, grouped by task (`portal`: Apple mode's)."""
    who = (
        f"Your role: *{role.value}*."
        if role
        else f"You don't have an mdmbot role yet. {ask_admins(admins)}"
    )
    return [section(help_text(role, portal)), context(who)]
