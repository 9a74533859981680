"""Settle tokens whose delivery was cut short (a crash between the DM and activation)."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.slack.builders import blocks
from bot.slack.gateway import SlackUnavailable
from bot.slack.services import SLACK_TARGET, BotServices
from core.errors import MdmbotError
from core.models import TokenStatus
from core.roles import Actor
from core.tokens import issuance
from core.tokens.issuance import StuckDelivery

log = logging.getLogger("mdmbot.deliveries")


def settle_deliveries(svc: BotServices, now: datetime) -> int:
    """Activate stuck tokens whose file reached its user; discard the rest and say so."""
    with svc.ctx.unit_of_work(readonly=True) as session:
        stuck = issuance.stuck_deliveries(session, now)
    settled = 0
    for item in stuck:
        try:
            arrived = _arrived(svc, item)
        except SlackUnavailable as exc:
            log.info("cannot check delivery of token %s yet (%s)", item.token_id, exc.error)
            continue
        settled += 1
        if arrived and _activate(svc, item, now):
            continue
        with svc.ctx.unit_of_work() as session:
            issuance.discard_token(
                session, Actor(item.user_id), item.token_id, now, "delivery interrupted"
            )
        log.warning(
            "discarded token %s for %s: delivery interrupted", item.token_id, item.server_name
        )
        _tell(
            svc,
            item,
            f":warning: The new token for *{blocks.esc(item.server_name)}* you asked for didn't "
            "reach you (mdmbot stopped while sending it), so it was discarded. The previous "
            "token (if any) stays valid; request a new one if you still need it.",
        )
    return settled


def _arrived(svc: BotServices, item: StuckDelivery) -> bool:
    """Whether the token file reached the DM it was being uploaded to (asks Slack)."""
    if item.status != TokenStatus.DELIVERING or not (item.target or "").startswith(SLACK_TARGET):
        return False
    channel = str(item.target).removeprefix(SLACK_TARGET)
    return item.filename in svc.gateway.file_names_in(channel, item.issued_at)


def _activate(svc: BotServices, item: StuckDelivery, now: datetime) -> bool:
    try:
        with svc.ctx.unit_of_work() as session:
            issuance.activate_token(session, Actor(item.user_id), item.token_id, now)
    except MdmbotError as exc:
        log.warning("could not activate delivered token %s: %s", item.token_id, exc.message)
        return False
    log.info(
        "activated token %s for %s: its file had reached the user", item.token_id, item.server_name
    )
    _tell(
        svc,
        item,
        f"The new token for *{blocks.esc(item.server_name)}* that mdmbot sent you "
        f"({item.filename}) is now the active one; the previous token has stopped working.",
    )
    return True


def _tell(svc: BotServices, item: StuckDelivery, text: str) -> None:
    """DM the requester when they are a Slack user (operators of the CLI are not)."""
    if item.user_id[:1] in ("U", "W") and item.user_id.isalnum():
        svc.try_dm(item.user_id, text)
