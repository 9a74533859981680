"""`mdmbot serve`: run the Slack bot over Socket Mode or HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.context import AppContext
from bot.logs import configure_logging
from core import db
from core.errors import ConfigError, InvalidInput
from core.people import persons as people

if TYPE_CHECKING:
    from slack_bolt import App

    from bot.http import HttpServer, Listener, SlackWsgi, WsgiApp
    from bot.runtime import Runtime
    from bot.slack.services import BotServices
    from core.dep.feedback import ReplacedTokenAlert

log = logging.getLogger("mdmbot.serve")
DEP_THREADS = 8  # the device assignment service's own pool when it is not one of --http's
THREADS = 8  # threads per worker answering requests, unless --threads says otherwise


def worker_count(value: str, http: bool) -> int:
    """How many worker processes `--workers` asks for (`auto`: one per core in HTTP mode)."""
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if http else 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(
            f"--workers must be a whole number of 1 or more, or auto (not “{value}”)."
        )
    if count > 1 and not http:
        raise ConfigError(
            "--workers is for HTTP mode: Socket Mode keeps one connection to Slack, so it runs "
            "in one process. Use `mdmbot serve --http --workers N`, or drop --workers."
        )
    return count


def serve(ctx: AppContext, args: argparse.Namespace) -> int:
    """Run the bot until stopped (its options were checked by `bot.cli.serve_options`)."""
    http = args.http or args.no_slack
    workers = worker_count(args.workers, http)
    # Over HTTP every listener has processes of its own, which share metrics through files;
    # this must precede importing them.
    metrics_dir = tempfile.mkdtemp(prefix="mdmbot-metrics-") if http else None
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _serve(ctx, args, workers)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(ctx: AppContext, args: argparse.Namespace, workers: int) -> int:
    from bot import metrics
    from bot.http import Listener, SlackWsgi, every_request, start_in_background
    from bot.runtime import Runtime
    from bot.slack.app import build_app, build_services
    from bot.slack.gateway import SlackUnavailable

    if metrics.multiprocess_mode() != bool(args.http or args.no_slack):
        raise RuntimeError("bot.metrics was imported before the serving mode was known")
    settings = ctx.settings
    configure_logging(settings.mdmbot_log_format)
    if args.no_slack:
        return _serve_without_slack(ctx, args, workers)
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
    app = build_app(svc, signing_secret=None)
    dep_port = args.dep_port
    dep = None
    if dep_port is not None:
        dep = Listener(
            "device assignment service (--dep-port)",
            args.dep_host or settings.mdmbot_dep_host,
            dep_port,
            dep_app(ctx, svc),
            on_loop=every_request,
        )
    if args.http:
        slack = SlackWsgi(app, runtime.health, signing_secret=settings.slack_signing_secret or "")
        listeners = [
            slack_listener(args.host, args.port, slack, svc),
            Listener(
                "metrics",
                args.metrics_host,
                args.metrics_port,
                metrics.wsgi,
                workers=1,
                on_loop=every_request,
            ),
            *([dep] if dep else []),
        ]
        return _serve_listeners(ctx, args, workers, listeners, runtime)
    if dep is not None:
        start_in_background(dep, DEP_THREADS)
        log.info("device assignment service listening on %s:%s", dep.host, dep.port)
    return _serve_socket_mode(app, settings.slack_app_token or "", runtime)


def _serve_listeners(
    ctx: AppContext,
    args: argparse.Namespace,
    workers: int,
    listeners: list[Listener],
    runtime: Runtime | None,
) -> int:
    """Serve the listeners from granian processes; this process runs the one scheduler."""
    from bot.context import checkpoint_in_background, leave_checkpoints_to_thread
    from bot.http import WorkerHooks, check_listeners, serve_processes

    check_listeners(listeners)
    if runtime is not None:
        runtime.watch()
    database = db.sqlite_file(ctx.engine.url)
    if database is not None:
        leave_checkpoints_to_thread(ctx.engine)
    # No database connection may cross a fork: each process opens its own.
    ctx.engine.dispose()
    hooks = WorkerHooks(
        stop=runtime.stop_worker if runtime is not None else lambda: None,
        after_fork=lambda: ctx.engine.dispose(close=False),
    )

    def run() -> Callable[[], None]:
        stops = []
        if runtime is not None:
            runtime.start()
            stops.append(runtime.stop)
        if database is not None:
            stops.append(checkpoint_in_background(database))

        def stop() -> None:
            for each in stops:
                each()

        return stop

    return serve_processes(listeners, workers, args.threads or THREADS, hooks, run)


def _serve_without_slack(ctx: AppContext, args: argparse.Namespace, workers: int) -> int:
    """`serve --no-slack`: the device assignment service, /healthz and /metrics only."""
    from bot import metrics
    from bot.asm.app import apple_port_app
    from bot.dep.standalone import dep_app_without_slack, health_app
    from bot.http import Listener, every_request

    listeners = [
        Listener("device assignment service (--dep-port)", args.dep_host
                 or ctx.settings.mdmbot_dep_host, args.dep_port,
                 apple_port_app(ctx, dep_app_without_slack(ctx)), on_loop=every_request),
        Listener("health (--port)", args.host, args.port, health_app(ctx), workers=1,
                 on_loop=every_request),
        Listener("metrics", args.metrics_host, args.metrics_port, metrics.wsgi, workers=1,
                 on_loop=every_request),
    ]  # fmt: skip
    log.info("serving without Slack: alerts wait in the database for a process with Slack")
    return _serve_listeners(ctx, args, workers, listeners, None)


def slack_listener(host: str, port: int, slack: SlackWsgi, svc: BotServices) -> Listener:
    """The Slack listener as `serve --http` runs it: the work left after its acks holds back the
    next request, and what waits on nothing slow is answered on the event loop."""
    from bot.http import Listener

    return Listener("slack", host, port, slack, backlog=svc.after_ack, on_loop=slack.on_loop)


def dep_app(ctx: AppContext, svc: BotServices) -> WsgiApp:
    """The Apple port's WSGI app (DEP and School Manager APIs), telling Slack what MDM servers
    do."""
    from bot.asm.app import apple_port_app
    from bot.dep.app import build_dep_app
    from bot.slack import dep_alerts

    def on_replaced(alert: ReplacedTokenAlert) -> None:
        svc.background.submit(dep_alerts.post_replaced, svc, alert)

    def on_cases(cases: tuple[int, ...]) -> None:
        svc.background.submit(dep_alerts.refresh_cases, svc, cases)

    def on_created(server_id: int, name: str, client_id: str) -> None:
        svc.background.submit(dep_alerts.post_server_created, svc, server_id, name, client_id)

    dep = build_dep_app(ctx, on_replaced=on_replaced, on_cases=on_cases)
    return apple_port_app(ctx, dep, on_created)


def serve_dep(ctx: AppContext, svc: BotServices, host: str, port: int) -> HttpServer:
    """Serve the device assignment service alone, from a background thread (tests, tools)."""
    from bot.http import Listener, every_request, start_in_background

    listener = Listener(
        "device assignment service (--dep-port)", host, port, dep_app(ctx, svc),
        on_loop=every_request,
    )  # fmt: skip
    return start_in_background(listener, DEP_THREADS)


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
    from bot.http import StopSignals

    stop = StopSignals()
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
    from bot.http import StopSignals

    stop = StopSignals()
    runtime.start()
    log.info("scheduler running as %s", runtime.holder)
    stop.wait()
    runtime.stop()
    return 0


def alerts_run(ctx: AppContext, args: argparse.Namespace) -> int:
    """`mdmbot alerts run [--at TIME] [--dry-run]`: one sweep now, as of TIME."""
    from bot.slack.app import build_services
    from bot.slack.sweeper import Sweeper, preview

    if args.at and not args.dry_run:
        raise InvalidInput(
            "--at only previews: add --dry-run to see what would be posted then. "
            "A real sweep always runs as of now."
        )
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
