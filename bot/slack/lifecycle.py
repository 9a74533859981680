"""Slack side of the token lifecycle: departures, checklists, alert and rotate buttons."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import Ack, App, BoltResponse

from bot import metrics
from bot.slack import installs
from bot.slack.builders import lifecycle_blocks as lb
from bot.slack.builders import modals, phrases
from bot.slack.builders.blocks import plural, section
from bot.slack.gateway import Posted, SlackUnavailable
from bot.slack.listeners import api_key
from bot.slack.listeners.actions import open_checked
from bot.slack.services import BotServices, Delivery
from core.apple import refusals
from core.connections import state
from core.connections.server_state import ServerState
from core.errors import ConfigError, InvalidInput
from core.models import TokenStatus
from core.people import alerts, reminders, rotation
from core.people.rotation import CaseView
from core.roles import Actor, Permission
from core.tokens import servers

log = logging.getLogger("mdmbot.lifecycle")


def alert_channel(svc: BotServices) -> str:
    """The configured alert channel."""
    channel = svc.ctx.settings.mdmbot_alert_channel
    if not channel:
        raise ConfigError("Missing required setting MDMBOT_ALERT_CHANNEL.")
    return channel


def post_refusals(svc: BotServices, now: datetime) -> tuple[int, int]:
    """Post the one alert of each refused token file not alerted yet; (posted, failed)."""
    with svc.ctx.unit_of_work() as session:
        due = refusals.claim_alerts(session, now)
    posted = failed = 0
    for refused in due:
        text = phrases.token_refused(refused)
        try:
            svc.gateway.post(alert_channel(svc), text, [section(text)])
            posted += 1
        except SlackUnavailable as exc:
            log.warning("could not post the refused token alert (%s)", exc.error)
            failed += 1
            with svc.ctx.unit_of_work() as session:
                refusals.not_posted(session, refused.server_id)
    return posted, failed


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
            alert_channel(svc),
            lb.checklist_text(case, portal=svc.portal),
            installs.with_renew_all(
                svc, case, lb.checklist_blocks(
                    case, now, item_states(svc, case, now), portal=svc.portal
                )
            ),
        )
    except BaseException:
        with svc.ctx.unit_of_work() as session:
            rotation.release_post(session, case.id)
        raise
    with svc.ctx.unit_of_work() as session:
        rotation.record_case_message(session, case.id, posted.channel, posted.ts, now)
    metrics.alerts_sent.labels("checklist").inc()
    return posted


def item_states(svc: BotServices, case: CaseView, now: datetime) -> dict[int, ServerState]:
    """The state of each renewed item's server until its new token is used (by item token)."""
    found: dict[int, ServerState] = {}
    for item in case.left:
        if item.replaced:
            pair = svc.server_state(token_id=item.token_id, now=now)
            if pair is not None:
                found[item.token_id] = pair[1]
    return found


def refresh_case(svc: BotServices, case_id: int) -> None:
    """Edit a checklist's message in place to show what is done and what is left, and its
    latest reminder with it (closed when the checklist is)."""
    with svc.ctx.unit_of_work() as session:
        case = rotation.get_case(session, case_id)
        reminder = reminders.reminder_of(session, case_id)
    if case.channel and case.ts:
        now = svc.ctx.now()
        states = item_states(svc, case, now)
        svc.gateway.update(
            case.channel,
            case.ts,
            lb.checklist_text(case, portal=svc.portal),
            installs.with_renew_all(
                svc, case, lb.checklist_blocks(case, now, states, portal=svc.portal)
            ),
        )
        with svc.ctx.unit_of_work() as session:
            rotation.mark_case_edited(session, case, now)
        if reminder:
            text = lb.reminder_text(case, now, None, states)
            svc.gateway.update(case.channel, reminder, text, [section(text)])
            if case.status != "open":
                with svc.ctx.unit_of_work() as session:
                    reminders.record_reminder(session, case_id, None)


# Slack errors after which editing a message can never succeed (chat.update's documented errors).
GONE = {"message_not_found", "channel_not_found", "cant_update_message", "is_archived"}


def edit_stale(svc: BotServices, pace: Callable[[], None] | None = None) -> int:
    """Edit every alert and checklist that still offers to renew a replaced token; count them."""
    now, edited = svc.ctx.now(), 0
    with svc.ctx.unit_of_work(readonly=True) as session:
        stale = alerts.stale_alerts(session)
        portal = svc.ctx.settings.apple_portal
        states = {a.server_id: state.server_state(session, a.server_id, now, portal) for a in stale}
        cases = rotation.stale_cases(session)
    for alert in stale:
        if pace:
            pace()
        found = states.get(alert.server_id)
        st = found[1] if found else None
        try:
            svc.gateway.update(
                alert.channel,
                alert.ts,
                lb.alert_replaced_text(alert, st),
                lb.alert_replaced_blocks(alert, st),
            )
        except SlackUnavailable as exc:
            if exc.error not in GONE:
                continue  # retried at the next sweep
            log.info("alert %s:%s can't be edited (%s)", alert.channel, alert.ts, exc.error)
        with svc.ctx.unit_of_work() as session:
            alerts.mark_edited(session, alert.delivery_id, now)
        edited += 1
    for case_id in cases:
        if pace:
            pace()
        try:
            refresh_case(svc, case_id)
        except SlackUnavailable as exc:
            log.info("checklist %s not edited (%s)", case_id, exc.error)
            continue
        edited += 1
    return edited


def open_and_post(svc: BotServices, actor: Actor, person: str, reason: str) -> str:
    """Open a case (or find the open one), post it, and say what happened."""
    with svc.ctx.unit_of_work() as session:
        case = rotation.open_case(session, actor, person, reason, svc.ctx.now())
    if case is None:
        return f"<@{person}> has no active server tokens, so there is nothing to renew."
    if case.ts is None:
        post_case(svc, case)
    where = f"<#{case.channel or alert_channel(svc)}>"
    return (
        f"The checklist of {plural(len(case.left), 'server token')} downloaded by <@{person}> "
        f"is in {where}. They keep working until each is renewed."
    )


def register(app: App, svc: BotServices) -> None:
    """Register departure events, the lifecycle buttons and the post-rotation updates."""

    # Slack's Events API does not promise delivery order, and bolt runs listeners on a thread
    # pool: a deactivation and the reactivation right after it could be applied in reverse.
    # One thread applies a process's `user_change` events in the order they arrived.
    in_order = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdmbot-user-change")

    @app.middleware
    def user_changes_in_order(body: dict[str, Any], next: Callable[[], BoltResponse]) -> Any:
        event = body.get("event") or {}
        if body.get("type") != "event_callback" or event.get("type") != "user_change":
            return next()
        in_order.submit(apply_user_change, event)
        return BoltResponse(status=200, body="")

    def apply_user_change(event: dict[str, Any]) -> None:
        try:
            on_user_change(event)
        except Exception:
            log.exception("could not handle a user_change event")

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
                    name=user.get("name"),
                    email=profile.get("email"),
                    real_name=user.get("real_name") or profile.get("real_name"),
                )
            if case is not None and case.ts is None:
                post_case(svc, case)
            return
        with svc.ctx.unit_of_work() as session:
            cancelled = rotation.cancel_for_reactivation(session, user_id, now)
        if cancelled:
            edit_stale(svc)

    def confirm(origin: str) -> Any:
        def on_press(ack: Ack, body: dict[str, Any]) -> None:
            ack()
            token_id = int(body["actions"][0].get("value") or 0)
            meta = {"origin": origin, "token_id": str(token_id)}

            def build() -> dict[str, Any]:
                with svc.ctx.unit_of_work(readonly=True) as session:
                    server, token = servers.server_of_token(session, token_id)
                    found = servers.get_server_view_by_id(session, server.id)
                    [view] = state.annotate(session, [found])
                    case = rotation.case_for_token(session, token_id)
                    replaced = token.status != TokenStatus.ACTIVE
                if replaced:
                    raise InvalidInput(f"This token for “{view.name}” was already replaced.")
                if case is not None:
                    meta["case_id"] = str(case.id)
                return modals.confirm_token_modal(view, meta, now=svc.ctx.now())

            open_checked(svc, body, Permission.MANAGE_SERVERS, build)

        return on_press

    app.action(lb.RENEW)(confirm("alert"))
    app.action(lb.ROTATE)(confirm("rotation"))

    def after_renewal(meta: dict[str, Any], user_id: str, outcome: Delivery) -> None:
        if outcome.activation is not None:
            edit_stale(svc)

    svc.origin_handlers["*"] = after_renewal
    installs.register(app, svc, lambda: edit_stale(svc))
    api_key.register(app, svc, lambda: edit_stale(svc))


def remind(svc: BotServices, case: CaseView, now: datetime, every: timedelta) -> bool:
    """Claim and post a checklist's daily reminder in its thread; False if another took it."""
    if not case.channel or not case.ts:
        return post_case(svc, case, now, every) is not None
    with svc.ctx.unit_of_work() as session:
        if not rotation.claim_post(session, case.id, now, every):
            return False
    overdue = case.overdue(now)
    try:
        link = _link(svc, case.channel, case.ts) if overdue else None
        text = lb.reminder_text(case, now, link, item_states(svc, case, now))
        posted = svc.gateway.post(
            case.channel, text, [section(text)], thread_ts=case.ts, broadcast=overdue
        )
    except BaseException:
        with svc.ctx.unit_of_work() as session:
            rotation.release_post(session, case.id)
        raise
    with svc.ctx.unit_of_work() as session:
        older = reminders.reminder_of(session, case.id)
        reminders.record_reminder(session, case.id, posted.ts)
    if older:
        try:
            svc.gateway.update(case.channel, older, lb.OLDER_REMINDER, [section(lb.OLDER_REMINDER)])
        except SlackUnavailable as exc:
            log.info("older reminder %s not edited (%s)", older, exc.error)
    metrics.alerts_sent.labels("checklist").inc()
    return True


def _link(svc: BotServices, channel: str, ts: str) -> str | None:
    """A link to the checklist for a post shown in the channel (none if Slack won't give it)."""
    try:
        return svc.gateway.permalink(channel, ts)
    except SlackUnavailable as exc:
        log.info("no link to checklist %s:%s (%s)", channel, ts, exc.error)
        return None


def try_post_case(svc: BotServices, case: CaseView, now: datetime, every: timedelta) -> bool:
    """Post a checklist, or its daily reminder, as of `now`; False if not posted."""
    try:
        return remind(svc, case, now, every)
    except SlackUnavailable as exc:
        metrics.alerts_failed.labels("checklist").inc()
        log.warning("could not post checklist %s: %s", case.id, exc.error)
        return False
