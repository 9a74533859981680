"""Handlers of the `mdmbot` operator commands: parse, call one use case, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.context import AppContext
from core import issuance, people, servers
from core.certificates import MAX_CERT_BYTES
from core.errors import CertificateError, InvalidInput
from core.issuance import IssuedToken
from core.roles import Actor, parse_role


def _operator(args: argparse.Namespace) -> Actor:
    return Actor(str(getattr(args, "actor", None) or "operator"), operator=True)


def _read_cert(path: str) -> bytes:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_CERT_BYTES:
            raise CertificateError(
                f"{path} is larger than {MAX_CERT_BYTES // 1024} KiB; a public key certificate "
                "is a few KiB."
            )
        return file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=_encode)
    sys.stdout.write("\n")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(type(value).__name__)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _installed(moment: datetime | None) -> str:
    return f"installed {_when(moment)}" if moment else "not installed yet"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns under their headers."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _write_private(path: Path, content: bytes) -> None:
    """Write a file atomically, readable only by its owner."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=".mdmbot-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _deliver(ctx: AppContext, actor: Actor, issued: IssuedToken, out: str | None) -> int:
    """Write the pending token to disk, then activate it; on failure the old token stays."""
    path = Path(out) if out else Path(issued.filename)
    try:
        _write_private(path, issued.content)
    except OSError as exc:
        with ctx.unit_of_work() as session:
            issuance.discard_token(session, actor, issued.token_id, ctx.now(), "not written")
        raise InvalidInput(
            f"Cannot write {path}: {exc.strerror or exc}. The previous token stays valid."
        ) from exc
    with ctx.unit_of_work() as session:
        issuance.activate_token(session, actor, issued.token_id, ctx.now())
    for warning in issued.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"Wrote {path} for “{issued.server_name}”; it expires "
        f"{issued.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}. Upload it to the MDM server."
    )
    return 0


def server_add(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server add."""
    cert = _read_cert(args.cert)
    actor = _operator(args)
    with ctx.unit_of_work() as session:
        issued = servers.add_server(
            session,
            ctx.vault,
            actor,
            name=args.name,
            certificate=cert,
            release_devices=not args.no_release_devices,
            now=ctx.now(),
        )
    return _deliver(ctx, actor, issued, args.out)


def _server_dict(view: servers.ServerView, now: datetime) -> dict[str, Any]:
    data = asdict(view)
    data["state"] = view.state(now)
    data["days_left"] = view.days_left(now)
    return data


def server_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server list."""
    now = ctx.now()
    with ctx.unit_of_work() as session:
        views = servers.list_servers(session)
    if args.json:
        _json([_server_dict(v, now) for v in views])
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
                v.state(now),
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
        view = servers.get_server_view(session, args.name)
    if args.json:
        _json(_server_dict(view, now))
        return 0
    rows = [
        ("Name", view.name),
        ("Release devices", "yes" if view.release_devices else "no"),
        ("State", view.state(now)),
        ("Token issued", _when(view.token_issued_at)),
        ("Token expires", _when(view.token_expires_at)),
        ("Downloaded by", view.downloaded_by or "-"),
        ("MDM server", _installed(view.token_installed_at) if view.token_id else "-"),
        ("Last seen", _when(view.token_last_used_at)),
        ("Certificate", view.certificate_subject or "-"),
        ("Certificate expires", _when(view.certificate_not_after)),
        ("Added by", f"{view.created_by} on {_when(view.created_at)}"),
    ]
    for label, value in rows:
        print(f"{label + ':':<21}{value}")
    return 0


def server_edit(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server edit."""
    if args.rename is None and args.release is None:
        raise InvalidInput(
            "Nothing to change: give --rename NEW, --release-devices or --no-release-devices."
        )
    with ctx.unit_of_work() as session:
        server = servers.edit_server(
            session,
            _operator(args),
            args.name,
            now=ctx.now(),
            rename=args.rename,
            release_devices=args.release,
        )
    print(
        f"Updated “{server.name}”: release devices "
        f"{'allowed' if server.release_devices else 'not allowed'}."
    )
    return 0


def server_remove(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server remove."""
    with ctx.unit_of_work() as session:
        server = servers.remove_server(session, _operator(args), args.name, ctx.now())
    print(f"Removed “{server.name}”; its token is revoked.")
    return 0


def cert_replace(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot cert replace."""
    cert = _read_cert(args.cert)
    actor = _operator(args)
    with ctx.unit_of_work() as session:
        issued = servers.replace_certificate(session, ctx.vault, actor, args.name, cert, ctx.now())
    return _deliver(ctx, actor, issued, args.out)


def token_issue(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token issue."""
    actor = _operator(args)
    with ctx.unit_of_work() as session:
        server = servers.find_server(session, args.name)
        issued = issuance.issue_token(session, ctx.vault, actor, server, ctx.now())
    return _deliver(ctx, actor, issued, args.out)


def token_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token list."""
    with ctx.unit_of_work() as session:
        server = servers.find_server(session, args.name) if args.name else None
        tokens = issuance.list_tokens(session, server)
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


def db_upgrade(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot db upgrade."""
    print("Database schema is up to date.")
    return 0
