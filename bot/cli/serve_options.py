"""The options of `mdmbot serve`, checked before anything is created (database, key file)."""

from __future__ import annotations

import argparse
import os

from bot.serve import worker_count
from core.errors import ConfigError
from core.settings import Settings

NO_SLACK_DEP_PORT = 8443


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
        default=os.environ.get("PORT", "3000"),
        help="port to listen on with --http or --no-slack (default 3000 or $PORT)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads answering the requests that may wait on another service (Slack's "
        "interactive payloads), per listener and worker (default 8; the others are answered on "
        "each worker's event loop, and work after the ack has its own pool)",
    )
    parser.add_argument(
        "--workers",
        default=os.environ.get("MDMBOT_WORKERS", "1"),
        metavar="N",
        help="HTTP worker processes per listener (granian; metrics has one), or `auto` for one "
        "per core; HTTP mode only (default 1 or $MDMBOT_WORKERS)",
    )
    parser.add_argument(
        "--metrics-host",
        default=os.environ.get("MDMBOT_METRICS_HOST", "127.0.0.1"),
        help="address of the /metrics listener with --http (default 127.0.0.1)",
    )
    parser.add_argument(
        "--metrics-port",
        default=os.environ.get("MDMBOT_METRICS_PORT", "9464"),
        help="port of the /metrics listener with --http or --no-slack (default 9464)",
    )
    parser.add_argument(
        "--dep-port",
        default=None,
        help="serve Apple's side on this port: the device assignment service (DEP API) for MDM "
        "servers and the School Manager API for scripts (default $MDMBOT_DEP_PORT; "
        f"{NO_SLACK_DEP_PORT} with --no-slack, else off)",
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
    parser.add_argument(
        "--no-slack",
        action="store_true",
        help="serve only the device assignment service, /healthz (on --port) and /metrics, "
        "without Slack: alerts wait in the database for a process that has Slack",
    )
    parser.set_defaults(precheck=check_options)


def port_number(option: str, value: object) -> int:
    """A TCP port from an option or setting (0: any free port), refused in one line otherwise."""
    text = str(value).strip()
    number = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"{option} must be a port number from 1 to 65535 (not “{value}”).")
    return number


def check_options(settings: Settings, args: argparse.Namespace) -> None:
    """Refuse bad options and missing settings before anything is created (database, key)."""
    args.port = port_number("--port (or PORT)", args.port)
    args.metrics_port = port_number("--metrics-port", args.metrics_port)
    args.dep_port_given = args.dep_port is not None
    if args.dep_port is not None:
        args.dep_port = port_number("--dep-port", args.dep_port)
    elif settings.mdmbot_dep_port is not None:
        args.dep_port = port_number("MDMBOT_DEP_PORT", settings.mdmbot_dep_port)
    worker_count(args.workers, args.http or args.no_slack)
    if settings.apple_mode:
        check_apple_mode(settings, args)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be 1 or more (not {args.threads}).")
    if args.no_slack:
        if args.dep_port is None:
            args.dep_port = NO_SLACK_DEP_PORT
        return
    settings.require("SLACK_BOT_TOKEN", "MDMBOT_ALERT_CHANNEL")
    if args.http:
        settings.require("SLACK_SIGNING_SECRET")
    elif not settings.slack_app_token:
        raise ConfigError(
            "Missing required setting SLACK_APP_TOKEN (for Socket Mode); "
            "or run `mdmbot serve --http`."
        )


def require_slack(settings: Settings, args: argparse.Namespace) -> None:
    """The settings every command that posts to Slack needs, checked before the database."""
    if not getattr(args, "dry_run", False):
        settings.require("SLACK_BOT_TOKEN", "MDMBOT_ALERT_CHANNEL")
    if settings.apple_mode:
        settings.require(*APPLE_ACCOUNT)


APPLE_ACCOUNT = ("MDMBOT_APPLE_CLIENT_ID", "MDMBOT_APPLE_KEY_ID", "MDMBOT_APPLE_KEY_FILE")


def check_apple_mode(settings: Settings, args: argparse.Namespace) -> None:
    """Apple mode serves no Apple side (MDM servers talk to Apple) and needs its API account."""
    if args.no_slack:
        raise ConfigError(
            "--no-slack serves only Apple's side, which mdmbot does not serve in Apple mode "
            "(MDMBOT_APPLE_API is set)."
        )
    if args.dep_port is not None:
        option = "--dep-port" if args.dep_port_given else "MDMBOT_DEP_PORT"
        raise ConfigError(
            f"{option} is refused in Apple mode (MDMBOT_APPLE_API is set): MDM servers talk to "
            "Apple itself, so mdmbot serves no DEP or School Manager API."
        )
    settings.require(*APPLE_ACCOUNT)
    key = settings.mdmbot_apple_key_file
    if key is not None and not key.is_file():
        raise ConfigError(
            f"Cannot read MDMBOT_APPLE_KEY_FILE {key}: not a file (the API account's private "
            f"key, downloaded from {settings.apple_portal})."
        )


def no_tokens_in_apple_mode(settings: Settings, args: argparse.Namespace) -> None:
    """In Apple mode tokens come from Apple's portal: mdmbot issues none."""
    if settings.apple_mode:
        raise ConfigError(
            "In Apple mode mdmbot issues no tokens: download the server's token in "
            f"{settings.apple_portal} (Preferences → your MDM server → Download Token) and take "
            "it in with "
            "`mdmbot token import NAME FILE`, or drop the file in the bot's DM."
        )
