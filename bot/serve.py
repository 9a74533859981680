"""`mdmbot serve`: run the Slack bot over Socket Mode or HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

from bot.context import AppContext
from bot.logs import configure_logging
from core import people
from core.errors import ConfigError

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
    settings.require("SLACK_BOT_TOKEN")
    if args.http:
        settings.require("SLACK_SIGNING_SECRET")
    elif not settings.slack_app_token:
        raise ConfigError(
            "Missing required setting SLACK_APP_TOKEN (for Socket Mode); "
            "or run `mdmbot serve --http`."
        )
    ctx.prepare_database()
    with ctx.unit_of_work() as session:
        granted = people.bootstrap_admins(session, settings.admins, ctx.now())
    if granted:
        log.info("granted Administrator from MDMBOT_ADMINS to %s", ", ".join(granted))
    svc = build_services(ctx)
    runtime = Runtime(ctx, svc, scheduler=not args.no_scheduler)
    app = build_app(
        svc,
        signing_secret=settings.slack_signing_secret if args.http else None,
        extra=runtime.extra_listeners(),
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
    """The long-running parts around the app: health, metrics and the scheduler."""

    def __init__(self, ctx: AppContext, svc: Any, *, scheduler: bool) -> None:
        self.ctx = ctx
        self.svc = svc
        self.scheduler_enabled = scheduler
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.scheduler: Any = None

    def extra_listeners(self) -> list[Any]:
        """Listeners beyond the core set."""
        return []

    def start(self) -> None:
        """Start background work."""

    def stop(self) -> None:
        """Stop background work and wait for in-flight jobs."""
        self.svc.background.shutdown(wait=True)

    def health(self) -> dict[str, Any]:
        """Database and scheduler state for /healthz."""
        from sqlalchemy import text

        report: dict[str, Any] = {"status": "ok"}
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            report["database"] = "ok"
        except Exception as exc:
            report["status"], report["database"] = "error", type(exc).__name__
        report["scheduler"] = "disabled" if not self.scheduler_enabled else "running"
        return report
