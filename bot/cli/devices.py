"""The `mdmbot devices …` commands (import, assign, unassign, list, show, defaults, release)
and `mdmbot apple sync`, Apple mode's read of Apple's servers and devices."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sqlmodel import Session

from bot.cli import connections, token_files
from bot.cli.commands import _json, _operator, _read_cert, _table
from bot.cli.output import count, read_file, safe
from bot.cli.output import when as _when
from bot.cli.progress import add_quiet, progress_bar
from bot.context import AppContext
from core.apple import devices as apple_devices
from core.apple import linking
from core.apple import sync as apple_sync
from core.connections import links
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.errors import InvalidInput
from core.models import Server
from core.tokens.certificates import load_certificate
from core.tokens.names import safe_filename

MAX_FILE = device_import.MAX_BYTES
SYNC_HELP = "read Apple's MDM servers and devices into mdmbot now (Apple mode)"


def add_parsers(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `devices` and its actions to the command line."""
    add = action_adder(groups, "devices", "import, assign, list and release devices")
    p = add("import", devices_import, "import devices from a CSV file (all rows or none)")
    p.add_argument("file", metavar="FILE.csv")
    add_quiet(p)
    p = add("assign", devices_assign, "assign devices to an MDM server")
    p.add_argument("server", metavar="SERVER")
    _serials(p)
    add_quiet(p)
    _wait(p)
    p = add("unassign", devices_unassign, "take devices off their MDM server")
    _serials(p)
    add_quiet(p)
    _wait(p)
    p = add("list", devices_list, "list devices (never released ones)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--server", metavar="NAME")
    which.add_argument("--unassigned", action="store_true")
    p.add_argument("--json", action="store_true")
    p = add("show", devices_show, "show one device")
    p.add_argument("serial", metavar="SERIAL")
    p.add_argument("--json", action="store_true")
    p = add("default", devices_default, "make SERVER the default for a device family")
    p.add_argument("family", metavar="FAMILY", help=", ".join(devices.FAMILIES))
    p.add_argument("server", metavar="SERVER")
    add("defaults", devices_defaults, "list the default server of each device family")
    p = add("release", devices_release, "release devices from the organisation (cannot be undone)")
    _serials(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    apple = groups.add_parser("apple", help="Apple mode: read Apple's servers and devices now")
    a = apple.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = a.add_parser("sync", help=SYNC_HELP, description=SYNC_HELP)
    p.set_defaults(handler=apple_sync_now)
    p.add_argument("--json", action="store_true")


def action_adder(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], group: str, text: str
) -> Callable[[str, object, str], argparse.ArgumentParser]:
    """A command group; what it returns adds an action (with `--actor`) to it."""
    sub = groups.add_parser(group, help=text).add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )

    def add(name: str, handler: object, text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=text, description=text)
        parser.set_defaults(handler=handler)
        parser.add_argument("--actor", metavar="USER", help="who is acting (default: your login)")
        return parser

    return add


def _serials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("serials", metavar="SERIAL", nargs="*")
    parser.add_argument("--file", metavar="F", help="serial numbers, one per line (or CSV cells)")


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", type=float, default=120.0, metavar="S",
        help="Apple mode: seconds to wait for Apple's activity to complete (default 120)",
    )  # fmt: skip


def _through_apple(ctx: AppContext, args: argparse.Namespace, server: str | None) -> int:
    """Apple mode: the assignment is Apple's activity; exit 0 completed, 1 failed, 3 still in
    progress."""
    if args.wait < 0:
        raise InvalidInput("--wait must be 0 seconds or more.")
    result = apple_devices.assign(
        ctx.apple, ctx.unit_of_work, _operator(args), server, _given(args),
        wait=args.wait, now=ctx.now,
    )  # fmt: skip
    print(safe(result.sentence()))
    return {"completed": 0, "failed": 1}.get(result.state, 3)


def _read(path: str) -> bytes:
    return read_file(path, MAX_FILE, f"{path} is larger than {MAX_FILE // (1024 * 1024)} MB.")


def _given(args: argparse.Namespace) -> list[str]:
    serials = list(args.serials)
    if args.file:
        serials += devices.split_serials(_read(args.file).decode("utf-8-sig", errors="replace"))
    if not serials:
        raise InvalidInput("Give serial numbers as arguments or with --file F.")
    return serials


def devices_import(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices import."""
    content = _read(args.file)
    with progress_bar(ctx, args) as progress, ctx.unit_of_work() as session:
        summary = device_import.import_devices(
            session,
            _operator(args),
            content,
            ctx.now(),
            source=Path(args.file).name,
            progress=progress,
        )
    print(
        f"Imported {count(summary.total, 'device')}: {summary.created} new, "
        f"{summary.updated} updated, {summary.unchanged} unchanged."
    )
    if summary.released:
        skipped = count(summary.released, "released device")
        print(f"  skipped {skipped} (they left the organisation)")
    for server, number in sorted(summary.to_default.items()):
        print(f"  {number} assigned to “{safe(server)}” (their family's default)")
    return 0


def devices_assign(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices assign."""
    if ctx.settings.apple_mode:
        return _through_apple(ctx, args, args.server)
    serials = _given(args)
    with progress_bar(ctx, args) as progress, ctx.unit_of_work() as session:
        result = devices.assign_devices(
            session, _operator(args), args.server, serials, ctx.now(), progress=progress
        )
    already = len(result.unchanged)
    print(
        f"Assigned {count(len(result.assigned), 'device')} to “{safe(result.server)}”"
        + (f" ({already} {'was' if already == 1 else 'were'} already there)." if already else ".")
    )
    return 0


def devices_unassign(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices unassign."""
    if ctx.settings.apple_mode:
        return _through_apple(ctx, args, None)
    serials = _given(args)
    with progress_bar(ctx, args) as progress, ctx.unit_of_work() as session:
        result = devices.unassign_devices(
            session, _operator(args), serials, ctx.now(), progress=progress
        )
    already = len(result.unchanged)
    print(
        f"Unassigned {count(len(result.assigned), 'device')} "
        f"({already} already {'was' if already == 1 else 'were'})."
    )
    return 0


def devices_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices list."""
    with ctx.unit_of_work(readonly=True) as session:
        views = devices.list_devices(session, server_name=args.server, unassigned=args.unassigned)
    if args.json:
        _json([asdict(v) for v in views])
        return 0
    if not views:
        if args.server:
            print(f"No devices on “{safe(args.server)}”.")
        elif args.unassigned:
            print("No unassigned devices.")
        else:
            print("No devices. Import some with: mdmbot devices import FILE.csv")
        return 0
    _table(
        ("SERIAL", "FAMILY", "MODEL", "ASSET TAG", "SERVER", "PROFILE"),
        [
            (
                v.serial_number,
                v.device_family,
                v.model,
                v.asset_tag or "-",
                v.server or "Unassigned",
                v.profile_status,
            )
            for v in views
        ],
    )
    return 0


def devices_show(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices show."""
    with ctx.unit_of_work(readonly=True) as session:
        view = devices.show_device(session, args.serial)
    if args.json:
        _json(asdict(view))
        return 0
    rows = [
        ("Serial number", view.serial_number),
        ("Model", f"{view.model} ({view.device_family}, {view.os})"),
        ("Description", view.description or "-"),
        ("Color", view.color or "-"),
        ("Asset tag", view.asset_tag or "-"),
        ("Order number", view.order_number or "-"),
        ("Server", view.server or ("released" if view.released_at else "Unassigned")),
        ("Assigned", f"{_when(view.assigned_at)} by {view.assigned_by or '-'}"),
        ("Profile", f"{view.profile_status} {view.profile_uuid or ''}".rstrip()),
        ("Released", _when(view.released_at)),
    ]
    for label, value in rows:
        print(f"{label + ':':<15}{safe(value)}")
    return 0


def devices_default(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices default."""
    with ctx.unit_of_work() as session:
        family, server = devices.set_default(
            session, _operator(args), args.family, args.server, ctx.now()
        )
    print(f"New {family} devices now go to “{server}”.")
    return 0


def devices_defaults(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices defaults."""
    with ctx.unit_of_work(readonly=True) as session:
        rows = devices.list_defaults(session)
    _table(("FAMILY", "DEFAULT SERVER"), [(f, s or "-") for f, s in rows])
    return 0


def devices_release(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot devices release."""
    serials = _given(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInput("Releasing cannot be undone: add --yes to confirm.")
        answer = input(
            f"Release {count(len(serials), 'device')} from the organisation? They leave Apple "
            "School Manager and every MDM server. Type 'release' to confirm: "
        )
        if answer.strip().lower() != "release":
            print("Nothing was released.")
            return 1
    with ctx.unit_of_work() as session:
        released = devices.release_devices(session, _operator(args), serials, ctx.now())
    print(
        f"Released {count(len(released), 'device')}: {', '.join(released[:20])}"
        + (" …" if len(released) > 20 else "")
    )
    return 0


def _apple_mode(ctx: AppContext) -> None:
    if not ctx.settings.apple_mode:
        raise InvalidInput(
            "mdmbot is not in Apple mode: set MDMBOT_APPLE_API=school (or business) and the "
            "API account's MDMBOT_APPLE_* settings."
        )


def apple_sync_now(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot apple sync."""
    _apple_mode(ctx)
    result = apple_sync.sync(lambda: ctx.apple, ctx.unit_of_work, ctx.now())
    if args.json:
        _json(asdict(result))
        return 0
    print(
        f"Synced with Apple: {count(result.servers, 'MDM server')}, "
        f"{count(result.devices, 'device')}, {count(result.changes, 'change')}."
    )
    return 0


def server_add_in_mode(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server add: in Apple mode the server is linked with Apple (no token is issued)."""
    if not ctx.settings.apple_mode:
        return connections.server_add_any(ctx, args)
    if bool(args.cert) == bool(args.mdm):
        raise InvalidInput("Give the public key certificate (--cert FILE) or a connection (--mdm).")
    spec, actor, now = None, _operator(args), ctx.now()
    if args.mdm:
        spec = connections.spec_from(ctx, args)
        loaded = connections.fetch_certificate(ctx, spec, args.name)
    else:
        loaded = load_certificate(_read_cert(args.cert), now=now)

    def connect(session: Session, server: Server) -> None:
        if spec is not None:
            links.save_connection(session, ctx.vault, actor, server, spec, now)

    business = ctx.settings.mdmbot_apple_api == "business"
    linked = linking.link_server(
        ctx.apple if business else None, ctx.unit_of_work, actor, name=args.name,
        certificate=loaded, release_devices=not args.no_release_devices, now=now, connect=connect,
    )  # fmt: skip
    if linked.apple_id:
        portal = ctx.settings.apple_portal
        print(f"Created “{safe(linked.name)}” in {portal} (id {linked.apple_id}) and linked it.")
    else:
        shown = args.cert
        if shown is None:  # fetched from the MDM: the person needs it as a file
            shown = f"{safe_filename(linked.name)}_certificate.pem"
            try:
                token_files.write_private(Path(shown), linked.certificate_pem.encode(), force=False)
            except OSError:
                print(f"{shown} exists already: it was left as it is.")
        print(f"Saved “{safe(linked.name)}”. Apple School Manager has no API to add it: add it "
              "there yourself.")  # fmt: skip
        steps = linking.school_steps(linked.name, not args.no_release_devices, shown)
        for number, step in enumerate(steps, 1):
            print(f"  {number}. {safe(step)}")
    print(safe(linking.next_step(linked.name, ctx.settings.apple_portal)))
    return 0
