"""Build the bolt App: middleware, listeners and the one error handler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltResponse

from bot.context import AppContext
from bot.slack import devices, lifecycle
from bot.slack.gateway import SlackGateway, make_client
from bot.slack.listeners import actions, commands, events, views
from bot.slack.services import BotServices, new_reference
from core import inbox

log = logging.getLogger("mdmbot.bot")


def build_services(ctx: AppContext) -> BotServices:
    """The services for the configured Slack workspace."""
    ctx.settings.require("SLACK_BOT_TOKEN")
    token = ctx.settings.slack_bot_token or ""
    client = make_client(token, ctx.settings.slack_api_url)
    return BotServices(ctx, SlackGateway(client, ctx.settings.slack_api_url))


def build_app(
    svc: BotServices,
    *,
    signing_secret: str | None,
    extra: list[Callable[[App, BotServices], None]] | None = None,
) -> App:
    """The bolt App with every listener registered."""
    app = App(
        client=svc.gateway.client,
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        token_verification_enabled=False,
        listener_executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="mdmbot-listener"),
        name="mdmbot",
        logger=logging.getLogger("mdmbot.bolt"),
    )

    @app.middleware
    def deduplicate_events(body: dict[str, Any], next: Callable[[], BoltResponse]) -> Any:
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id:
            with svc.ctx.unit_of_work() as session:
                fresh = inbox.first_delivery(session, str(event_id), svc.ctx.now())
            if not fresh:
                log.info("skipping repeated event %s", event_id)
                return BoltResponse(status=200, body="")
        return next()

    @app.middleware
    def record_actor(body: dict[str, Any], next: Callable[[], BoltResponse]) -> Any:
        user = body.get("user")
        if isinstance(user, dict) and body.get("type") != "event_callback":
            svc.remember_later(str(user.get("id", "")), user.get("username") or user.get("name"))
        elif body.get("user_id"):
            svc.remember_later(str(body["user_id"]), body.get("user_name"))
        return next()

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        reference = new_reference()
        log.error("unhandled error ref=%s: %s", reference, type(error).__name__, exc_info=error)
        user = body.get("user_id") or (body.get("user") or {}).get("id")
        if user:
            svc.try_dm(
                user,
                f":warning: Something went wrong in mdmbot and nothing was "
                f"changed. Reference: `{reference}`.",
            )

    for register in (
        commands.register,
        views.register,
        actions.register,
        events.register,
        lifecycle.register,
        devices.register,
        *(extra or []),
    ):
        register(app, svc)
    return app
