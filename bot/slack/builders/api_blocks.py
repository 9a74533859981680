"""The App Home's School Manager API accounts (Administrators only), each with a Revoke button."""

from __future__ import annotations

from collections.abc import Sequence

from bot.slack.builders.blocks import Block, button, context, esc, local_date, plain, plural
from core.asm.accounts import AccountView

REVOKE = "api_account_revoke"
SHOWN = 10


def revoke_button(account: AccountView) -> Block:
    """Revoke, after Slack's own confirmation dialog."""
    element = button("Revoke", REVOKE, account.client_id, "danger")
    element["confirm"] = {
        "title": plain("Revoke this API account?", 100),
        "text": {
            "type": "mrkdwn",
            "text": f"*{esc(account.label)}* stops working at once: its access tokens are "
            "refused and it gets no new ones. This cannot be undone.",
        },
        "confirm": plain("Revoke"),
        "deny": plain("Cancel"),
        "style": "danger",
    }
    return element


def api_account_blocks(accounts: Sequence[AccountView]) -> list[Block]:
    """A header, one section per active account (at most 10), and how to create one."""
    active = [a for a in accounts if a.revoked_at is None]
    blocks: list[Block] = [
        {"type": "divider"},
        {"type": "header", "text": plain("School Manager API accounts", 150)},
    ]
    for account in active[:SHOWN]:
        text = (
            f"*{esc(account.label)}* · `{account.client_id}` · {account.scope}\n"
            f"created {local_date(account.created_at)} by {esc(account.created_by)}"
        )
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": text},
             "accessory": revoke_button(account)}
        )  # fmt: skip
    more = len(active) - SHOWN
    revoked = len(accounts) - len(active)
    notes = ["Create one with `mdmbot api-account create LABEL --key-out FILE`."]
    if not active:
        notes.insert(0, "No API accounts.")
    if more > 0:
        notes.insert(0, f"…and {plural(more, 'more account')} (`mdmbot api-account list`).")
    if revoked:
        notes.append(f"{plural(revoked, 'revoked account')} not shown.")
    blocks.append(context(" ".join(notes)))
    return blocks
