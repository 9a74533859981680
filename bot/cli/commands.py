"""Handlers of the `mdmbot` operator commands: parse, call one use case, print."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlmodel import Session
from wcwidth import wcswidth

from bot.cli import token_files
from bot.cli.output import confirmed, count, read_file, safe
from bot.cli.output import when as _when
from bot.context import AppContext
from core import db
from core.apple import status as apple_status
from core.connections import installs, links, state
from core.connections.server_state import ServerState, retry_helps, state_of
from core.devices import unlink
from core.errors import InvalidInput
from core.people import persons as people
from core.roles import Actor, parse_role
from core.settings import SCHOOL_PORTAL
from core.tokens import issuance, servers
from core.tokens.certificates import MAX_CERT_BYTES, LoadedCertificate, load_certificate
from core.tokens.issuance import IssuedToken


def _operator(args: argparse.Namespace) -> Actor:
    return Actor(str(getattr(args, "actor", None) or getpass.getuser()), operator=True)


def _read_cert(path: str) -> bytes:
    return read_file(
        path,
        MAX_CERT_BYTES,
        f"{path} is larger than {MAX_CERT_BYTES // 1024} KiB; a public key certificate "
        "is a few KiB.",
    )


def _json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=_encode)
    sys.stdout.write("\n")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(type(value).__name__)


def _installed(view: servers.ServerView, st: ServerState) -> str:
    """Where the active token's install stands, in the words Slack uses for the same state."""
    if view.token_installed_at is not None:
        used = "in use since" if view.mdm_label or view.apple else "installed"
        return f"{used} {_when(view.token_installed_at)}"
    if st.error:
        failed = installs.failure_text(st.attempts, st.error)
        if not retry_helps(st.error):
            return (
                f"{failed[:1].upper()}{failed[1:]}; retrying cannot help: give mdmbot the new "
                f"API key (`mdmbot server connect {view.name} --mdm … --mdm-api-key-file FILE`)."
            )
        when = f" {_when(st.next_try)}" if st.next_try else ""
        return (
            f"{failed[:1].upper()}{failed[1:]}; mdmbot tries again{when}; "
            f"`mdmbot token push {view.name}` tries now."
        )
    return view.install_note or "not installed yet"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns under their headers."""
    rows = [tuple(safe(cell) for cell in row) for row in rows]
    columns = zip(headers, *rows, strict=True)
    widths = [max(_width(cell) for cell in column) for column in columns]
    for row in (headers, *rows):
        cells = zip(row, widths, strict=True)
        print("  ".join(cell + " " * (width - _width(cell)) for cell, width in cells).rstrip())


def _width(text: str) -> int:
    """Columns `text` takes in a terminal (East Asian wide characters take two)."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)


def adding(
    ctx: AppContext, args: argparse.Namespace, cert: LoadedCertificate
) -> Callable[[Session], IssuedToken]:
    """How `server add` prepares its first token: the server `args.name` with `cert`."""
    actor, vault = _operator(args), ctx.vault
    return lambda session: servers.add_server(
        session,
        vault,
        actor,
        name=args.name,
        certificate=cert,
        release_devices=not args.no_release_devices,
        now=ctx.now(),
    )


def server_add(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server add: the server exists only if its first token was written."""
    cert = load_certificate(_read_cert(args.cert), now=ctx.now())
    return token_files.issue_to_file(ctx, _operator(args), args, adding(ctx, args, cert))


def _server_dict(
    view: servers.ServerView, now: datetime, portal: str = SCHOOL_PORTAL
) -> dict[str, Any]:
    data = asdict(view)
    data["state"] = view.state(now)
    data["days_left"] = view.days_left(now)
    if view.token_id is not None and view.mdm_label is not None:
        data["install_note"] = _installed(view, state_of(view, now, portal))
    return data


def server_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server list."""
    now = ctx.now()
    with ctx.unit_of_work() as session:
        views = state.listed(session)
    if args.json:
        _json([_server_dict(v, now, ctx.settings.apple_portal) for v in views])
        return 0
    if not views:
        print("No MDM servers yet. Add one with: mdmbot server add NAME --cert FILE")
        return 0
    _table(
        ("NAME", "RELEASE", "STATE", "TOKEN EXPIRES", "DOWNLOADED BY"),
        [
            (
                v.name,
                "yes" if v.release_devices else "no",
                state_of(v, now, ctx.settings.apple_portal).word(),
                _when(v.token_expires_at),
                v.downloaded_by or "-",
            )
            for v in views
        ],
    )
    return 0


def server_show(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server show."""
    now = ctx.now()
    with ctx.unit_of_work() as session:
        view = state.annotate(session, [servers.get_server_view(session, args.name)])[0]
        mdm = links.describe(session, view.id)
        apple = apple_status.server_link(session, view.id) if ctx.settings.apple_mode else None
    if args.json:
        data = _server_dict(view, now, ctx.settings.apple_portal)
        _json({**data, "mdm": mdm} | ({"apple": apple} if apple else {}))
        return 0
    st = state_of(view, now, ctx.settings.apple_portal)
    rows = [
        ("Name", view.name),
        ("Release devices", "yes" if view.release_devices else "no"),
        ("State", st.word()),
        ("Token issued", _when(view.token_issued_at)),
        ("Token expires", _when(view.token_expires_at)),
        ("Downloaded by", view.downloaded_by or "-"),
        ("MDM server", _installed(view, st) if view.token_id else "-"),
        ("Last seen", _when(view.token_last_used_at)),
        ("Certificate", view.certificate_subject or "-"),
        ("Certificate expires", _when(view.certificate_not_after)),
        ("Added by", f"{view.created_by} on {_when(view.created_at)}"),
        ("MDM connection", _connection(mdm)),
    ]
    if apple:
        rows.append(("Apple id", str(apple["id"] or "not linked yet (next sync, by name)")))
        rows.append(("Last talked to Apple", _when(apple["last_connected_at"])))
    for label, value in rows:
        print(f"{label + ':':<21}{safe(value)}")
    return 0


def _connection(mdm: dict[str, Any] | None) -> str:
    if mdm is None:
        return "none (tokens are files)"
    last = mdm["last_install_error"] or f"last install {_when(mdm['last_install_at'])}"
    return f"{mdm['label']}: {last}"


def server_edit(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server edit."""
    if args.rename is None and args.release is None:
        raise InvalidInput(
            "Nothing to change: give --rename NEW, --release-devices or --no-release-devices."
        )
    with ctx.unit_of_work() as session:
        before = servers.find_server(session, args.name)
        old_name, old_release = before.name, before.release_devices
        server = servers.edit_server(
            session,
            _operator(args),
            args.name,
            now=ctx.now(),
            rename=args.rename,
            release_devices=args.release,
        )
    release = f"release devices {'allowed' if server.release_devices else 'not allowed'}"
    if (server.name, server.release_devices) == (old_name, old_release):
        print(f"Nothing changed: “{server.name}” already has that name and {release}.")
    elif server.name != old_name:
        print(f"Renamed “{old_name}” to “{server.name}”; {release}.")
    else:
        print(f"Updated “{server.name}”: {release}.")
    return 0


def _device_moves(moved: int, unassigned: int) -> str:
    parts = [f"{count(moved, 'device')} to their family's default server"] if moved else []
    parts += [f"{count(unassigned, 'device')} to Unassigned"] if unassigned else []
    return " and ".join(parts)


def server_remove(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server remove: at a terminal, say what moves and ask first."""
    with ctx.unit_of_work(readonly=True) as session:
        name, moved, unassigned = unlink.removal_preview(session, args.name)
    moves = _device_moves(moved, unassigned)
    question = (
        f"Remove “{safe(name)}”? Its token is revoked at once (the MDM server stops working)"
        + (f" and its devices move: {moves}." if moves else ".")
    )
    if not confirmed(question, yes=args.yes):
        print("Nothing was changed.")
        return 1
    with ctx.unit_of_work() as session:
        name, moved, unassigned = unlink.removal_preview(session, args.name)
        server = unlink.remove_server(
            session, _operator(args), args.name, ctx.now(), ctx.settings.apple_portal
        )
    moves = _device_moves(moved, unassigned)
    print(
        f"Removed “{safe(server.name)}”; its token is revoked."
        + (f" Moved {moves}." if moves else "")
    )
    return 0


def token_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token list."""
    with ctx.unit_of_work() as session:
        if args.name:
            tokens = servers.token_history(session, args.name)
        else:
            tokens = issuance.list_tokens(session)
    if args.json:
        _json([asdict(t) for t in tokens])
        return 0
    if not tokens:
        print("No tokens.")
        return 0
    _table(
        ("ID", "SERVER", "STATUS", "ISSUED", "EXPIRES", "DOWNLOADED BY", "INSTALLED", "LAST SEEN"),
        [
            (
                str(t.id),
                t.server_name,
                t.status,
                _when(t.issued_at),
                _when(t.expires_at),
                t.downloaded_by,
                _when(t.installed_at) if t.installed_at else "not yet",
                _when(t.last_used_at),
            )
            for t in tokens
        ],
    )
    return 0


def roles_grant(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot roles grant."""
    role = parse_role(" ".join(args.role))
    with ctx.unit_of_work() as session:
        people.grant_role(session, _operator(args), args.user, role, ctx.now())
    print(f"{args.user} is now {role.value}.")
    return 0


def roles_revoke(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot roles revoke."""
    with ctx.unit_of_work() as session:
        role = people.revoke_role(session, _operator(args), args.user, ctx.now())
    print(f"{args.user} is no longer {role.value}.")
    return 0


def roles_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot roles list."""
    with ctx.unit_of_work() as session:
        holders = people.list_roles(session)
    if args.json:
        _json([asdict(h) for h in holders])
        return 0
    if not holders:
        print("Nobody holds a role yet. Grant one with: mdmbot roles grant USER Administrator")
        return 0
    _table(("USER", "ROLE", "NAME"), [(h.slack_id, h.role.value, h.name or "") for h in holders])
    return 0


def _location(ctx: AppContext) -> str:
    """Where the database is: the SQLite file, or the URL without its password."""
    url = db.parse_url(ctx.settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return f"SQLite {url.database}"
    return url.render_as_string(hide_password=True)


def db_upgrade(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot db upgrade: say what was done, and where."""
    before, head, _ = db.schema_revisions(ctx.settings.database_url)
    ctx.prepare_database()
    where = _location(ctx)
    if before is None:
        print(f"Created the mdmbot tables (schema revision {head}) in {where}.")
    elif before != head:
        print(f"Upgraded the schema from revision {before} to {head} in {where}.")
    else:
        print(f"Nothing to do: the schema is already at revision {head} in {where}.")
    return 0


def db_info(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot db info: where the database is and its schema revision."""
    current, head, known = db.schema_revisions(ctx.settings.database_url)
    if current is None:
        state = "no mdmbot tables yet (run `mdmbot db upgrade`)"
    elif current == head:
        state = f"revision {current} (up to date)"
    elif known:
        state = f"revision {current}; this mdmbot needs {head} (run `mdmbot db upgrade`)"
    else:
        state = f"revision {current}, newer than this mdmbot ({head}): upgrade mdmbot"
    print(f"Database: {_location(ctx)}")
    print(f"Schema:   {state}")
    return 0
