"""`mdmbot serve`: run the Slack bot over Socket Mode or HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.context import AppContext
from bot.logs import configure_logging
from core import people
from core.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from slack_bolt import App

    from bot.http import HttpServer
    from bot.runtime import Runtime
    from bot.slack.services import BotServices
    from core.dep_feedback import ReplacedTokenAlert

log = logging.getLogger("mdmbot.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `mdmbot serve`."""
    parser.add_argument(
        "--http",
        action="store_true",
        help="serve POST /slack/events over HTTP instead of Socket Mode",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("MDMBOT_HOST", "0.0.0.0"),  # noqa: S104
        help="address to listen on with --http (default 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "3000")),
        help="port to listen on with --http (default 3000 or $PORT)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="HTTP threads answering Slack up to the ack (work after the ack has its own pool)",
    )
    parser.add_argument(
        "--dep-port",
        type=int,
        default=None,
        help="serve the device assignment service (Apple's DEP API) for MDM servers on this port "
        "(default $MDMBOT_DEP_PORT; off when neither is set)",
    )
    parser.add_argument(
        "--dep-host",
        default=None,
        help="address the device assignment service listens on (default $MDMBOT_DEP_HOST or "
        "0.0.0.0)",
    )
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not run expiry and rotation sweeps in this process",
    )


def serve(ctx: AppContext, args: argparse.Namespace) -> int:
    """Run the bot until stopped."""
    from bot.http import HttpServer, SlackWsgi
    from bot.runtime import Runtime
    from bot.slack.app import build_app, build_services
    from bot.slack.gateway import SlackUnavailable

    settings = ctx.settings
    configure_logging(settings.mdmbot_log_format)
    settings.require("SLACK_BOT_TOKEN", "MDMBOT_ALERT_CHANNEL")
    if args.http:
        settings.require("SLACK_SIGNING_SECRET")
    elif not settings.slack_app_token:
        raise ConfigError(
            "Missing required setting SLACK_APP_TOKEN (for Socket Mode); "
            "or run `mdmbot serve --http`."
        )
    with ctx.unit_of_work() as session:
        granted = people.bootstrap_admins(session, settings.admins, ctx.now())
    if granted:
        log.info("granted Administrator from MDMBOT_ADMINS to %s", ", ".join(granted))
    svc = build_services(ctx)
    try:
        identity = svc.gateway.check_token()
    except SlackUnavailable as exc:
        raise ConfigError(
            f"{exc.message} Check SLACK_BOT_TOKEN and SLACK_API_URL ({settings.slack_api_url})."
        ) from exc
    log.info("connected to Slack team %s as %s", identity.get("team"), identity.get("user"))
    runtime = Runtime(ctx, svc, scheduler=not args.no_scheduler)
    app = build_app(
        svc,
        signing_secret=settings.slack_signing_secret if args.http else None,
    )
    dep_port = args.dep_port if args.dep_port is not None else settings.mdmbot_dep_port
    if dep_port is not None:
        serve_dep(ctx, svc, args.dep_host or settings.mdmbot_dep_host, dep_port)
    if args.http:
        runtime.start()
        server = HttpServer(SlackWsgi(app, runtime.health), args.host, args.port, args.threads)
        server.serve_forever(on_stop=runtime.stop)
        return 0
    return _serve_socket_mode(app, settings.slack_app_token or "", runtime)


def serve_dep(ctx: AppContext, svc: BotServices, host: str, port: int) -> HttpServer:
    """Serve the device assignment service on its own listener, in a background thread."""
    from bot.dep.app import build_dep_app
    from bot.http import start_in_background
    from bot.slack import dep_alerts

    def on_replaced(alert: ReplacedTokenAlert) -> None:
        svc.background.submit(dep_alerts.post_replaced, svc, alert)

    def on_cases(cases: tuple[int, ...]) -> None:
        svc.background.submit(dep_alerts.refresh_cases, svc, cases)

    app = build_dep_app(ctx, on_replaced=on_replaced, on_cases=on_cases)
    try:
        server = start_in_background(app, host, port, threads=8, name="mdmbot-dep")
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve the device assignment service on {host}:{port} ({exc.strerror}); "
            "check --dep-port / MDMBOT_DEP_PORT."
        ) from exc
    log.info("device assignment service listening on %s:%s", host, server.port)
    return server


def _serve_socket_mode(app: App, app_token: str, runtime: Runtime) -> int:
    """Connect over Socket Mode (the client reconnects by itself) and run until SIGTERM."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError

    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()  # type: ignore[no-untyped-call]
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack refused SLACK_APP_TOKEN for Socket Mode ({exc.response.get('error')}); "
            "it must be an app-level token (xapp-…) with the connections:write scope."
        ) from exc
    log.info("connected over Socket Mode")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start()
    try:
        stop.wait()
    finally:
        handler.close()  # type: ignore[no-untyped-call]
        runtime.stop()
    return 0


def run_scheduler(ctx: AppContext, args: argparse.Namespace) -> int:
    """`mdmbot scheduler`: sweeps only, no Slack listener, until SIGTERM."""
    from bot.runtime import Runtime
    from bot.slack.app import build_services

    configure_logging(ctx.settings.mdmbot_log_format)
    ctx.settings.require("SLACK_BOT_TOKEN", "MDMBOT_ALERT_CHANNEL")
    runtime = Runtime(ctx, build_services(ctx), scheduler=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start()
    log.info("scheduler running as %s", runtime.holder)
    stop.wait()
    runtime.stop()
    return 0


def alerts_run(ctx: AppContext, args: argparse.Namespace) -> int:
    """`mdmbot alerts run [--at TIME] [--dry-run]`: one sweep now, as of TIME."""
    from bot.slack.app import build_services
    from bot.slack.sweeper import Sweeper, preview

    now = parse_time(args.at) if args.at else ctx.now()
    if args.dry_run:
        lines = preview(ctx, now)
        print("\n".join(lines) if lines else f"Nothing due as of {now:%Y-%m-%dT%H:%M:%SZ}.")
        return 0
    ctx.settings.require("SLACK_BOT_TOKEN", "MDMBOT_ALERT_CHANNEL")
    report = Sweeper(build_services(ctx)).sweep(now)
    print(report.summary())
    return 1 if report.alerts_failed else 0


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (a date alone means midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"“{text}” is not an RFC 3339 time like 2027-10-01T09:00:00Z.") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
