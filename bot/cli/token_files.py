"""Token files the command line writes: where they go, written privately, after a question."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from bot.cli.output import confirmed, read_file, safe, when
from bot.context import AppContext
from core.apple import intake
from core.apple.envelope import MAX_BYTES, read_token_file
from core.apple.refusals import TokenRefused
from core.connections import installs
from core.errors import InvalidInput, TokenConflict
from core.roles import Actor
from core.tokens import issuance, servers
from core.tokens.issuance import IssuedToken

FILE_TARGET = "file:"  # a token's delivery target when written by this command line


def check_file(path: Path, force: bool) -> Path:
    """Refuse a token file path that exists (unless forced) or whose directory cannot be written."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory.")
    if path.exists() and not force:
        raise InvalidInput(f"{path} already exists; pass --force to overwrite it.")
    if not path.parent.is_dir():
        raise InvalidInput(f"Cannot write {path}: the directory {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"Cannot write {path}: the directory {path.parent} is not writable.")
    return path


def destination_of(out: str | None, force: bool) -> Path:
    """Where the token file goes, checked before anything changes: a file, or a directory."""
    path = Path(out or ".").expanduser().absolute()
    if out and out.endswith(("/", os.sep)) and not path.is_dir():
        raise InvalidInput(f"Cannot write into {out}: the directory does not exist.")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InvalidInput(f"Cannot write into {path}: the directory is not writable.")
        return path
    return check_file(path, force)


def write_private(path: Path, content: bytes, *, force: bool) -> None:
    """Write to a temporary file (mode 0600) and move it into place; never clobber unless forced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mdmbot-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the path appeared meanwhile: nothing is overwritten
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_or_refuse(
    path: Path, content: bytes, *, force: bool, exists: str = "pass --force to overwrite it"
) -> None:
    """`write_private`, its failures as one-line refusals (`exists` ends the one for a clash)."""
    try:
        write_private(path, content, force=force)
    except FileExistsError as exc:
        raise InvalidInput(f"{path} already exists; {exists}.") from exc
    except OSError as exc:
        raise InvalidInput(
            f"Cannot write {path}: {exc.strerror or exc}. Nothing was changed."
        ) from exc


def ask_replacing(
    ctx: AppContext, args: argparse.Namespace, what: str, also: str = ""
) -> bool | None:
    """Whether the server has a token to replace, after asking (at a terminal, unless --yes):
    the old token stops working (and `also`). None: the operator said no."""
    with ctx.unit_of_work(readonly=True) as session:
        view = servers.get_server_view(session, args.name)
    if view.token_id is None:
        return False
    question = (
        f"{what} for “{safe(view.name)}”: its current token (expires "
        f"{when(view.token_expires_at)}) stops working at once, and the MDM server cannot "
        f"sync until the new token is uploaded to it.{also} Continue?"
    )
    if confirmed(question, yes=args.yes):
        return True
    print("Nothing was changed.")
    return None


def issue_to_file(
    ctx: AppContext,
    actor: Actor,
    args: argparse.Namespace,
    prepare: Callable[[Session], IssuedToken],
    *,
    replacing: str | None = None,
) -> int:
    """Prepare, write and activate a token in one unit of work: any failure leaves nothing.

    `replacing` (what is made, for the question) when the server may already have a token."""
    force = bool(getattr(args, "force", False))
    destination = destination_of(args.out, force)
    replaced = ask_replacing(ctx, args, replacing) if replacing else False
    if replaced is None:
        return 1
    now = ctx.now()
    with ctx.unit_of_work() as session:
        issued = prepare(session)
        path = destination
        if destination.is_dir():
            path = check_file(destination / issued.filename, force)
        refusal = issuance.start_delivery(
            session, actor, issued.token_id, f"{FILE_TARGET}{path}", now
        )
        if refusal is not None:
            raise TokenConflict(refusal)
        write_or_refuse(path, issued.content, force=force)
        try:
            issuance.activate_token(session, actor, issued.token_id, now)
            session.commit()
        except BaseException:
            path.unlink(missing_ok=True)  # the token was never recorded: its file is useless
            raise
    for warning in issued.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    print(
        f"Wrote {shown} for “{safe(issued.server_name)}”; it expires "
        f"{issued.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}. Upload it to the MDM server"
        + (": the previous token no longer works." if replaced else ".")
    )
    return 0


def token_import(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token import NAME FILE: a token downloaded from Apple's portal, checked,
    made the active one, and installed through the server's connection when it has one."""
    if not ctx.settings.apple_mode:
        raise InvalidInput(
            "`token import` takes in tokens downloaded from Apple School Manager or Apple "
            "Business, in Apple mode "
            "only (MDMBOT_APPLE_API); here mdmbot issues them itself: `mdmbot token issue NAME`."
        )
    data = read_file(args.file, MAX_BYTES, f"{args.file} is too large to be a server token.")
    token = read_token_file(data, Path(args.file).name, ctx.settings.apple_portal)
    actor, now = Actor(str(args.actor), operator=True), ctx.now()
    with ctx.unit_of_work(readonly=True) as session:
        server = servers.find_server(session, args.name)
        refused: TokenRefused | None = None
        try:
            intake.check(session, server, token, now)  # refused here, before the question
        except TokenRefused as exc:
            refused = exc
        view = servers.get_server_view(session, args.name)
    if refused is not None:  # the next sweep posts its one alert and the Home shows it
        with ctx.unit_of_work() as session:
            intake.note_refused(session, actor, view.id, token, refused, now)
        raise refused
    if view.token_id is not None and not confirmed(
        f"The token in {safe(token.filename)} becomes the one mdmbot watches for "
        f"“{safe(view.name)}”; its current token (expires {when(view.token_expires_at)}) no "
        "longer is. Continue?",
        yes=args.yes,
    ):
        print("Nothing was changed.")
        return 1
    with ctx.unit_of_work() as session:
        taken = intake.take_in(
            session, ctx.vault, actor, servers.find_server(session, args.name), token, now,
            via="cli",
        )  # fmt: skip
    name = safe(taken.server_name)
    expiry = f"{taken.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    if taken.install_id is None:
        holder = safe(actor.user_id)
        offered = (
            f" It is kept encrypted: {holder} can have it by DM with “Send me the file again” "
            "on mdmbot's App Home."
            if holder[:1] in "UW" and holder.isalnum()
            else ""
        )
        print(
            f"Took in {safe(taken.filename)} for “{name}”: it is the active token (expires "
            f"{expiry}, from its {taken.expiry_from}). Upload the file to the MDM server; "
            f"mdmbot shows it in use once Apple sees the server connect.{offered}"
        )
        return 0
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, taken.install_id, ctx.holder, ctx.now
    )
    if outcome is None or outcome.skipped:
        print(f"Took in the token for “{name}”; another mdmbot process is installing it.")
        return 0
    if outcome.installed:
        with ctx.unit_of_work(readonly=True) as session:
            expires = servers.get_server_view(session, args.name).token_expires_at
        expiry = f"{expires:%Y-%m-%dT%H:%M:%SZ}"
        print(
            f"Took in the token for “{name}” and installed it in {outcome.label}; it expires "
            f"{expiry}."
        )
        return 0
    print(
        f"mdmbot: took in the token for “{name}” (the active one now), but it could not be "
        f"installed in {outcome.label}: {outcome.error} It will be retried; "
        f"`mdmbot token push {name}` retries now.",
        file=sys.stderr,
    )
    return 1
