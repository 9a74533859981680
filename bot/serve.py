"""`mdmbot serve`: run the Slack bot over Socket Mode or HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from bot import metrics
from bot.context import AppContext
from bot.logs import configure_logging
from bot.scheduler import Scheduler, Sweeper, preview
from bot.services import BotServices
from bot.slack_gateway import SlackUnavailable
from core import people, servers
from core.errors import ConfigError, InvalidInput
from core.servers import ServerView

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
    parser.add_argument("--threads", type=int, default=16, help="HTTP worker threads")
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not run expiry and rotation sweeps in this process",
    )


def serve(ctx: AppContext, args: argparse.Namespace) -> int:
    """Run the bot until stopped."""
    from bot.app import build_app, build_services
    from bot.http import HttpServer, SlackWsgi

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
    runtime.start()
    if args.http:
        server = HttpServer(SlackWsgi(app, runtime.health), args.host, args.port, args.threads)
        server.serve_forever(on_stop=runtime.stop)
        return 0
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, settings.slack_app_token)
    try:
        handler.start()  # type: ignore[no-untyped-call]
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        handler.close()  # type: ignore[no-untyped-call]
        runtime.stop()
    return 0


class Runtime:
    """The long-running parts around the app: health and the scheduler."""

    def __init__(
        self, ctx: AppContext, svc: BotServices, *, scheduler: bool, post_interval: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.svc = svc
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.scheduler: Scheduler | None = None
        if scheduler:
            self.scheduler = Scheduler(
                Sweeper(svc, post_interval=post_interval),
                self.holder,
                sweep_minutes=ctx.settings.mdmbot_sweep_minutes,
                lease_seconds=ctx.settings.mdmbot_lease_seconds,
            )

    def start(self) -> None:
        """Start background work."""
        metrics.watch_expiry(self._servers, self.ctx.now)
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        """Stop background work and wait for in-flight jobs."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.svc.background.shutdown(wait=True)

    def _servers(self) -> list[ServerView]:
        with self.ctx.unit_of_work() as session:
            return servers.list_servers(session)

    def health(self) -> dict[str, Any]:
        """Database and scheduler state for /healthz."""
        report: dict[str, Any] = {"status": "ok"}
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            report["database"] = "ok"
        except Exception as exc:
            report["status"], report["database"] = "error", type(exc).__name__
        report["scheduler"] = self.scheduler.state() if self.scheduler else {"role": "disabled"}
        return report


def run_scheduler(ctx: AppContext, args: argparse.Namespace) -> int:
    """`mdmbot scheduler`: sweeps only, no Slack listener, until SIGTERM."""
    from bot.app import build_services

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
    from bot.app import build_services

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
