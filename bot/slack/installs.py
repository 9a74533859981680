"""New tokens of connected servers: installed into the MDM server, the file DM'd only on failure."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from bot import metrics
from bot.slack.builders import blocks
from bot.slack.gateway import SlackUnavailable
from core.connections import installs
from core.connections.links import ConnectionSpec
from core.errors import MdmbotError
from core.roles import Actor
from core.tokens import issuance
from core.tokens.issuance import IssuedToken

if TYPE_CHECKING:
    from bot.slack.services import BotServices, Delivery

log = logging.getLogger("mdmbot.installs")


def installed_text(label: str, server_name: str, expires_at: datetime) -> str:
    """What the person sees once the MDM server took the token."""
    return (
        f"Installed in {label} — waiting for its first use. The new token for "
        f"*{blocks.esc(server_name)}* expires {blocks.local_date(expires_at)}."
    )


def install_failed_text(label: str, server_name: str, error: str, *, file_sent: bool) -> str:
    """One line saying why the install failed, and that the token is kept and retried."""
    where = "The file is in your DMs" if file_sent else "Slack didn't deliver the file either"
    return (
        f"Couldn't install the new token for *{blocks.esc(server_name)}* in {label}: "
        f"{blocks.esc(error)} {where}; mdmbot keeps retrying the install."
    )


def deliver_connected(
    svc: BotServices, issued: IssuedToken, user_id: str, spec: ConnectionSpec
) -> Delivery:
    """Activate the token and install it now; on failure DM the file as without a connection."""
    from bot.slack.services import Delivery

    actor, ctx = Actor(user_id), svc.ctx
    try:
        with ctx.unit_of_work() as session:
            activation = installs.issue_through(session, actor, issued.token_id, spec, ctx.now())
            install_id = installs.install_id_of(session, issued.token_id)
    except MdmbotError as exc:
        with ctx.unit_of_work() as session:
            issuance.discard_token(session, actor, issued.token_id, ctx.now(), "not activated")
        return Delivery(False, exc.message)
    metrics.tokens_issued.inc()
    assert install_id is not None
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    svc.refresh_home(user_id)
    if outcome is not None and outcome.installed:
        text = installed_text(spec.label(), issued.server_name, issued.expires_at)
        return Delivery(True, text, activation=activation, issued=issued)
    error = (outcome.error if outcome else None) or "another mdmbot process is installing it."
    comment = blocks.token_comment(
        issued.server_name, issued.expires_at, issued.warnings, replaces_active=False
    )
    try:
        channel = svc.gateway.open_dm(user_id)
        svc.gateway.send_file(channel, issued.filename, issued.content, comment)
        sent = True
    except SlackUnavailable as exc:
        log.warning("could not DM the token file after a failed install: %s", exc.error)
        sent = False
    text = install_failed_text(spec.label(), issued.server_name, error, file_sent=sent)
    return Delivery(True, text, activation=activation, issued=issued)


def renewed_notice(label: str, server_name: str, installed: bool, error: str | None) -> str:
    """The one-line notice an automatic renewal posts instead of an expiry alert."""
    if installed:
        return (
            f":recycle: Renewed the token for *{blocks.esc(server_name)}* automatically and "
            f"installed it in {label} — waiting for its first use."
        )
    return (
        f":warning: Renewed the token for *{blocks.esc(server_name)}* automatically but "
        f"couldn't install it in {label}: {blocks.esc(error or '')} mdmbot keeps retrying."
    )
