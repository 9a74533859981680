"""Slack side of the token lifecycle: departures, checklists, alert and rotate buttons."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import Ack, App

from bot import metrics
from bot.slack import lifecycle_blocks as lb
from bot.slack import modals
from bot.slack.gateway import Posted, SlackUnavailable
from bot.slack.listeners.actions import open_checked
from bot.slack.services import BotServices, Delivery
from core import alerts, rotation, servers
from core.errors import ConfigError, InvalidInput
from core.models import TokenStatus
from core.roles import Actor, Permission
from core.rotation import CaseView

log = logging.getLogger("mdmbot.lifecycle")


def alert_channel(svc: BotServices) -> str:
    """The configured alert channel."""
    channel = svc.ctx.settings.mdmbot_alert_channel
    if not channel:
        raise ConfigError("Missing required setting MDMBOT_ALERT_CHANNEL.")
    return channel


def post_case(
    svc: BotServices, case: CaseView, now: datetime | None = None, every: timedelta | None = None
) -> Posted | None:
    """Claim, post a checklist (as of `now`) and remember where; None if already claimed."""
    now = now or svc.ctx.now()
    with svc.ctx.unit_of_work() as session:
        if not rotation.claim_post(session, case.id, now, every):
            return None
    try:
        posted = svc.gateway.post(
            alert_channel(svc), lb.checklist_text(case), lb.checklist_blocks(case, now)
        )
    except BaseException:
        with svc.ctx.unit_of_work() as session:
            rotation.release_post(session, case.id)
        raise
    with svc.ctx.unit_of_work() as session:
        rotation.record_case_message(session, case.id, posted.channel, posted.ts, now)
    metrics.alerts_sent.labels("checklist").inc()
    return posted


def refresh_case(svc: BotServices, case_id: int) -> None:
    """Edit a checklist's latest message in place to show what is done and what is left."""
    with svc.ctx.unit_of_work() as session:
        case = rotation.get_case(session, case_id)
    if case.channel and case.ts:
        svc.gateway.update(
            case.channel, case.ts, lb.checklist_text(case), lb.checklist_blocks(case, svc.ctx.now())
        )


def open_and_post(svc: BotServices, actor: Actor, person: str, reason: str) -> str:
    """Open a case (or find the open one), post it, and say what happened."""
    with svc.ctx.unit_of_work() as session:
        case = rotation.open_case(session, actor, person, reason, svc.ctx.now())
    if case is None:
        return f"<@{person}> has no active server tokens, so there is nothing to rotate."
    post_case(svc, case, every=timedelta(0))  # asked for now: post even if posted before
    return (
        f"Posted a checklist of {len(case.left)} token(s) downloaded by <@{person}> in "
        f"<#{alert_channel(svc)}>. They stay valid until rotated."
    )


def register(app: App, svc: BotServices) -> None:
    """Register departure events, the lifecycle buttons and the post-rotation updates."""

    @app.event("user_change")
    def on_user_change(event: dict[str, Any]) -> None:
        user = event.get("user") or {}
        user_id, now = str(user.get("id", "")), svc.ctx.now()
        if not user_id or user.get("is_bot"):
            return
        if user.get("deleted"):
            profile = user.get("profile") or {}
            with svc.ctx.unit_of_work() as session:
                case = rotation.record_departure(
                    session,
                    user_id,
                    now,
                    name=user.get("real_name") or user.get("name"),
                    email=profile.get("email"),
                )
            if case is not None and case.ts is None:
                post_case(svc, case)
            return
        with svc.ctx.unit_of_work() as session:
            cancelled = rotation.cancel_for_reactivation(session, user_id, now)
        for case_id in cancelled:
            refresh_case(svc, case_id)

    def confirm(origin: str) -> Any:
        def on_press(ack: Ack, body: dict[str, Any]) -> None:
            ack()
            token_id = int(body["actions"][0].get("value") or 0)
            message = body.get("container") or {}
            meta = {
                "origin": origin,
                "token_id": str(token_id),
                "channel": str(message.get("channel_id", "")),
                "ts": str(message.get("message_ts", "")),
            }

            def build() -> dict[str, Any]:
                with svc.ctx.unit_of_work(readonly=True) as session:
                    server, token = servers.server_of_token(session, token_id)
                    view = servers.get_server_view_by_id(session, server.id)
                    case = rotation.case_for_token(session, token_id)
                    replaced = token.status != TokenStatus.ACTIVE
                if replaced:
                    raise InvalidInput(f"This token for “{view.name}” was already replaced.")
                if case is not None:
                    meta["case_id"] = str(case.id)
                return modals.confirm_token_modal(view, meta)

            open_checked(svc, body, Permission.MANAGE_SERVERS, build)

        return on_press

    app.action(lb.RENEW)(confirm("alert"))
    app.action(lb.ROTATE)(confirm("rotation"))

    def after_alert(meta: dict[str, Any], user_id: str, outcome: Delivery) -> None:
        channel, ts = str(meta.get("channel") or ""), str(meta.get("ts") or "")
        if outcome.issued is None or channel != alert_channel(svc) or not ts:
            return
        with svc.ctx.unit_of_work(readonly=True) as session:
            ours = alerts.alert_posted_at(session, channel, ts)
        if not ours:
            log.warning("not editing message %s in %s: not an alert mdmbot posted", ts, channel)
            return
        svc.gateway.update(
            str(meta["channel"]),
            str(meta["ts"]),
            f"Renewed: {outcome.issued.server_name}",
            lb.alert_done_blocks(
                outcome.issued.server_name, user_id, outcome.issued.expires_at, svc.ctx.now()
            ),
        )

    def refresh_ticked(meta: dict[str, Any], user_id: str, outcome: Delivery) -> None:
        if outcome.activation is None:
            return
        with svc.ctx.unit_of_work(readonly=True) as session:
            cases = {
                c.id
                for t in outcome.activation.superseded
                if (c := rotation.case_for_token(session, t)) is not None
            }
        for case_id in cases | set(outcome.activation.closed_cases):
            refresh_case(svc, case_id)

    svc.origin_handlers["alert"] = after_alert
    svc.origin_handlers["*"] = refresh_ticked


def try_post_case(svc: BotServices, case: CaseView, now: datetime, every: timedelta) -> bool:
    """Repost a checklist last posted `every` ago, as of `now`; False if not posted."""
    try:
        return post_case(svc, case, now, every) is not None
    except SlackUnavailable as exc:
        metrics.alerts_failed.labels("checklist").inc()
        log.warning("could not post checklist %s: %s", case.id, exc.error)
        return False
