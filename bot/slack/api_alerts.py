"""The alert channel told, once, of a server created through the School Manager API: it has no
token yet (as at Apple), so someone presses Get token."""

from __future__ import annotations

import logging

from bot.slack.builders.blocks import button, esc, section
from bot.slack.gateway import SlackUnavailable
from bot.slack.lifecycle import alert_channel
from bot.slack.services import BotServices

log = logging.getLogger("mdmbot.asm")


def post_server_created(svc: BotServices, server_id: int, name: str, client_id: str) -> None:
    """Post the news with a Get token button (best effort: the Home tab offers it too)."""
    text = (
        f"*{esc(name)}* was linked through the School Manager API (`{esc(client_id)}`). "
        "It has no token yet: get one and upload it to the MDM server."
    )
    blocks = [
        section(text),
        {"type": "actions",
         "elements": [button("Get token", "server_token", str(server_id), "primary")]},
    ]  # fmt: skip
    try:
        svc.gateway.post(alert_channel(svc), f"{name} needs a token", blocks)
    except SlackUnavailable as exc:
        log.warning("could not tell the alert channel about %s (%s)", name, exc.error)
