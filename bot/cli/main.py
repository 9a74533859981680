"""The `mdmbot` command line: a stable, scriptable interface over `core`."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from importlib import metadata

import sqlalchemy as sa

from bot import serve
from bot.cli import api_accounts as cli_api_accounts
from bot.cli import backup as cli_backup
from bot.cli import commands as cli_commands
from bot.cli import connections as cli_connections
from bot.cli import devices as cli_devices
from bot.cli import serve_options
from bot.cli import token_files as cli_token_files
from bot.cli.output import plain
from bot.context import AppContext
from core.errors import ConfigError, MdmbotError
from core.people import persons as people
from core.settings import load_settings

log = logging.getLogger("mdmbot.cli")

Handler = Callable[[AppContext, argparse.Namespace], int]
MIGRATING = {("serve", None), ("scheduler", None)}
OWN_DATABASE = {("db", "upgrade"), ("db", "info")}  # they open (or create) it themselves


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _actor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--actor",
        metavar="USER",
        help="Slack user id (U…) recorded as the downloader (default: your login)",
    )


def _yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation at a terminal"
    )


def _out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="TOKEN_FILE",
        help="where to write the token file (a file, or a directory for Apple's file name)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite TOKEN_FILE if it already exists"
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="mdmbot",
        description=(
            "Link MDM servers in Apple School Manager or Apple Business and keep their server "
            "tokens alive."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mdmbot {_version()}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    server = groups.add_parser("server", help="link, list, edit and remove MDM servers")
    s = server.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(s, "add", cli_devices.server_add_in_mode, "link a new MDM server, issue its token")
    p.add_argument("name")
    p.add_argument("--cert", metavar="FILE", help="public key certificate (.pem/.der)")
    cli_connections.add_arguments(p)
    p.add_argument(
        "--no-release-devices",
        action="store_true",
        help="do not allow this MDM server to release devices",
    )
    _out(p)
    _actor(p)
    p = _add(s, "list", cli_commands.server_list, "list MDM servers and their token expiry")
    p.add_argument("--json", action="store_true")
    p = _add(s, "show", cli_commands.server_show, "show one MDM server")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = _add(s, "edit", cli_commands.server_edit, "rename a server or change device release")
    p.add_argument("name")
    p.add_argument("--rename", metavar="NEW")
    release = p.add_mutually_exclusive_group()
    release.add_argument("--release-devices", dest="release", action="store_true", default=None)
    release.add_argument("--no-release-devices", dest="release", action="store_false")
    p = _add(s, "remove", cli_commands.server_remove, "unlink a server and revoke its token")
    p.add_argument("name")
    _yes(p)
    p = _add(
        s, "connect", cli_connections.server_connect, "install the server's tokens into its MDM"
    )
    p.add_argument("name")
    cli_connections.add_arguments(p)
    p.add_argument(
        "--fetch-certificate",
        action="store_true",
        help="Apple mode: fetch a new certificate (to replace the one at Apple)",
    )
    _out(p)
    _actor(p)
    p = _add(s, "disconnect", cli_connections.server_disconnect, "forget the MDM connection")
    p.add_argument("name")
    _actor(p)

    cert = groups.add_parser("cert", help="replace a server's public key certificate")
    c = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(
        c,
        "replace",
        cli_connections.cert_replace_any,
        "upload a new public key and write the new token (the old one stops working)",
    )
    p.set_defaults(precheck=serve_options.no_tokens_in_apple_mode)
    p.add_argument("name")
    p.add_argument("--cert", required=True, metavar="FILE")
    _out(p)
    _actor(p)
    _yes(p)

    token = groups.add_parser("token", help="issue and list server tokens")
    t = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(
        t,
        "issue",
        cli_connections.token_issue_any,
        "write a new token for a server (the old one stops working)",
    )
    p.set_defaults(precheck=serve_options.no_tokens_in_apple_mode)
    p.add_argument("name")
    p.add_argument(
        "--new-consumer-key",
        action="store_true",
        help="draw a new consumer key (the MDM server must accept a changed key)",
    )
    _out(p)
    _actor(p)
    _yes(p)
    p = _add(
        t,
        "import",
        cli_token_files.token_import,
        "take in a token downloaded from Apple School Manager or Apple Business (Apple mode)",
    )
    p.add_argument("name")
    p.add_argument("file", metavar="FILE", help="the .p7m file Apple gave")
    _actor(p)
    _yes(p)
    p = _add(t, "push", cli_connections.token_push, "install the active token into the MDM now")
    p.add_argument("name")
    _actor(p)
    p = _add(t, "list", cli_commands.token_list, "list tokens (never their secrets)")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")

    roles = groups.add_parser("roles", help="grant, revoke and list roles")
    r = roles.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(r, "grant", cli_commands.roles_grant, "give a Slack user a role")
    p.add_argument("user", metavar="USER")
    p.add_argument(
        "role",
        metavar="ROLE",
        nargs="+",
        help="Administrator, Site Manager or Device Enrollment Manager",
    )
    p = _add(r, "revoke", cli_commands.roles_revoke, "take a Slack user's role away")
    p.add_argument("user", metavar="USER")
    p = _add(r, "list", cli_commands.roles_list, "list who holds which role")
    p.add_argument("--json", action="store_true")

    cli_devices.add_parsers(groups)

    cli_backup.add_parsers(groups)

    cli_api_accounts.add_parsers(groups)

    dbp = groups.add_parser("db", help="database maintenance")
    d = dbp.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add(d, "upgrade", cli_commands.db_upgrade, "create or upgrade the schema, and say where")
    _add(d, "info", cli_commands.db_info, "print where the database is and its schema revision")

    p = _add(groups, "serve", serve.serve, "run the Slack bot (Socket Mode, or HTTP with --http)")
    serve_options.add_arguments(p)
    p = _add(
        groups,
        "scheduler",
        serve.run_scheduler,
        "run only the sweeps (expiry alerts, checklists, reconciliation, Apple sync)",
    )
    p.set_defaults(precheck=serve_options.require_slack)
    alerts = groups.add_parser("alerts", help="run expiry alerts now")
    a = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _add(a, "run", serve.alerts_run, "run one sweep now (posting to Slack)")
    p.set_defaults(precheck=serve_options.require_slack)
    p.add_argument("--at", metavar="TIME", help="with --dry-run: preview as of this RFC 3339 time")
    p.add_argument("--dry-run", action="store_true", help="print what would be posted")
    return parser


def _version() -> str:
    try:
        return metadata.version("mdmbot")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _reader_gone() -> int:
    """Output piped into a reader that closed (`| head`): stop quietly, as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe at exit
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; refusals print one line on stderr and exit non-zero."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        ctx = AppContext(load_settings())
        if getattr(args, "precheck", None) is not None:
            args.precheck(ctx.settings, args)
        if getattr(args, "actor", None) is not None:
            people.check_user_id(args.actor)
        elif hasattr(args, "actor"):
            args.actor = getpass.getuser()
        command = (args.group, getattr(args, "action", None))
        if command in MIGRATING:
            ctx.prepare_database()
        elif command not in OWN_DATABASE and not cli_backup.reads_no_database(args):
            ctx.check_database()
        handler: Handler = args.handler
        code = handler(ctx, args)
        sys.stdout.flush()  # a reader that went away is noticed here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(
            f"mdmbot: cannot open the database ({reason}); check MDMBOT_DATABASE_URL.",
            file=sys.stderr,
        )
        return 2
    except ConfigError as exc:
        print(f"mdmbot: {plain(exc.message)}", file=sys.stderr)
        return 2
    except MdmbotError as exc:
        print(f"mdmbot: {plain(exc.message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        reference = uuid.uuid4().hex[:8]
        if args.group in ("serve", "scheduler"):
            log.exception("unexpected error %s", reference)
        print(
            f"mdmbot: unexpected error (reference {reference}); rerun with "
            "MDMBOT_DEBUG=1 for details.",
            file=sys.stderr,
        )
        if os.environ.get("MDMBOT_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        return 3
