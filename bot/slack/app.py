"""Build the bolt App: middleware, listeners and the one error handler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware import Middleware

from bot.context import AppContext
from bot.http import VERIFIED
from bot.slack import dep_alerts, devices, lifecycle
from bot.slack.acks import AckingExecutor
from bot.slack.gateway import SlackGateway, SlackUnavailable, make_client
from bot.slack.listeners import actions, apple_tokens, commands, events, views
from bot.slack.services import BotServices, crash_text, new_reference
from core import inbox

log = logging.getLogger("mdmbot.bot")

METADATA_KEY_PURPOSE = "slack private_metadata"


def build_services(ctx: AppContext) -> BotServices:
    """The services for the configured Slack workspace."""
    ctx.settings.require("SLACK_BOT_TOKEN")
    token = ctx.settings.slack_bot_token or ""
    client = make_client(token, ctx.settings.slack_api_url)
    key = ctx.vault.derive_key(METADATA_KEY_PURPOSE)
    return BotServices(ctx, SlackGateway(client, ctx.settings.slack_api_url, metadata_key=key))


class Gatekeeper(Middleware):
    """Drop repeated deliveries and record who is acting, before any listener runs."""

    def __init__(self, svc: BotServices) -> None:
        self.svc = svc

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        """Answer a repeated delivery with an empty 200; otherwise note the actor and go on."""
        body = req.body
        kind = body.get("type")
        event_id = body.get("event_id") if kind == "event_callback" else None
        if kind in inbox.INTERACTIVE and req.mode == "http" and req.raw_body:
            # A signed payload stays valid for Slack's 5-minute window: a replay is one request.
            # (Socket Mode payloads arrive over the app's own connection: nothing to replay.)
            event_id = inbox.interaction_key(req.raw_body)
        if event_id:
            with self.svc.ctx.unit_of_work() as session:
                fresh = inbox.first_delivery(session, str(event_id), self.svc.ctx.now())
            if not fresh:
                log.info("skipping repeated delivery %s", event_id)
                return BoltResponse(status=200, body="")
        user, remember = body.get("user"), self.svc.remember_later
        if isinstance(user, dict) and kind != "event_callback":
            remember(str(user.get("id", "")), user.get("username") or user.get("name"))
        elif body.get("user_id"):
            remember(str(body["user_id"]), body.get("user_name"))
        next()
        return resp


def _not_token_skipped(record: logging.LogRecord) -> bool:
    """Drop bolt's warning that SLACK_BOT_TOKEN is unused: mdmbot gives bolt its own client."""
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


def build_app(
    svc: BotServices,
    *,
    signing_secret: str | None,
    extra: list[Callable[[App, BotServices], None]] | None = None,
) -> App:
    """The bolt App with every listener registered."""
    bolt_log = logging.getLogger("mdmbot.bolt")
    bolt_log.addFilter(_not_token_skipped)
    app = App(
        client=svc.gateway.client,
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        token_verification_enabled=False,
        listener_executor=AckingExecutor(max_workers=16, thread_name_prefix="mdmbot-listener"),
        name="mdmbot",
        logger=bolt_log,
    )

    app.use(Gatekeeper(svc))

    @app.error
    def on_error(
        error: Exception, body: dict[str, Any], request: BoltRequest, context: BoltContext
    ) -> None:
        reference = new_reference()
        if isinstance(error, SlackUnavailable):  # the gateway logged the failed call already
            log.error("Slack call failed ref=%s: %s", reference, error.error)
        else:
            log.error("unhandled error ref=%s: %s", reference, type(error).__name__, exc_info=error)
        # Only a request Slack signed (HTTP) or sent over the app's own socket names a real user.
        verified = request.mode == "socket_mode" or context.get(VERIFIED) is True
        user = body.get("user_id") or (body.get("user") or {}).get("id")
        if user and verified and getattr(error, "error", None) != "unreachable":
            svc.try_dm(user, crash_text(reference))

    for register in (
        apple_tokens.register,  # first: in Apple mode its buttons replace the sandbox's
        commands.register,
        views.register,
        actions.register,
        events.register,
        lifecycle.register,
        dep_alerts.register,
        devices.register,
        *(extra or []),
    ):
        register(app, svc)
    return app
