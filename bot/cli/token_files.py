"""Token files the command line writes: where they go, written privately, after a question."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from bot.cli.output import confirmed, safe, when
from bot.context import AppContext
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
