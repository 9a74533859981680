"""`mdmbot` commands for MDM connections: link without a file, connect, disconnect, push."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from bot.cli import commands, token_files
from bot.cli.commands import _operator
from bot.cli.token_files import check_file, destination_of, write_private
from bot.context import AppContext
from core.apple import intake
from core.connections import installs, links
from core.connections.links import ConnectionSpec, InstallError
from core.connections.server_state import retry_helps
from core.errors import InvalidInput
from core.roles import Actor
from core.tokens import issuance, servers
from core.tokens.certificates import LoadedCertificate, load_certificate
from core.tokens.issuance import IssuedToken

MAX_KEY_BYTES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that describe a connection (`server add` and `server connect`)."""
    parser.add_argument("--mdm", choices=sorted(links.KINDS), help="install tokens into it")
    parser.add_argument("--mdm-url", metavar="URL", help="the MDM server's API URL")
    parser.add_argument("--mdm-dep-name", metavar="DEP", help="NanoDEP: the DEP name")
    parser.add_argument(
        "--mdm-api-key-file", metavar="FILE", help="a file holding the API key (NanoDEP, Fleet)"
    )
    parser.add_argument(
        "--mdm-base-url",
        metavar="URL",
        help="NanoDEP: point its DEP client at this URL (default MDMBOT_DEP_PUBLIC_URL; in Apple "
        "mode, Apple's DEP API)",
    )
    parser.add_argument("--mdm-command", metavar="COMMAND", help="command: PROGRAM ARGS…")
    parser.add_argument(
        "--auto-renew-days",
        type=int,
        metavar="N",
        help="renew and install the token N days (1–180) before it expires",
    )


def _api_key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()[: MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise InvalidInput(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if len(data) > MAX_KEY_BYTES:
        raise InvalidInput(f"{path} is too large for an API key.")
    return data.decode("utf-8", "replace").strip()


def spec_from(ctx: AppContext, args: argparse.Namespace) -> ConnectionSpec:
    """The connection the options describe, checked."""
    base_url = args.mdm_base_url
    if base_url is None and args.mdm == "nanodep":
        base_url = links.nanodep_base_url(
            ctx.settings.mdmbot_dep_public_url, apple_mode=ctx.settings.apple_mode
        )
    spec = links.make_spec(
        args.mdm,
        url=args.mdm_url,
        dep_name=args.mdm_dep_name,
        api_key=_api_key(args.mdm_api_key_file),
        base_url=base_url,
        command=args.mdm_command,
        auto_renew_days=args.auto_renew_days,
    )
    warning = links.plain_http(spec)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    return ctx.installer.check(spec)


def fetch_certificate(ctx: AppContext, spec: ConnectionSpec, name: str) -> LoadedCertificate:
    """The MDM server's certificate, fetched and checked before anything is created."""
    try:
        pem = ctx.installer.fetch_certificate(spec, name)
    except InstallError as exc:
        raise InstallError(f"Could not fetch the certificate: {exc.message}") from exc
    return load_certificate(pem, now=ctx.now())


def issue_and_install(
    ctx: AppContext,
    actor: Actor,
    args: argparse.Namespace,
    spec: ConnectionSpec | None,
    prepare: Callable[[Session], IssuedToken],
) -> int:
    """Issue a token, activate it, and install it through the server's connection now."""
    out = getattr(args, "out", None)
    force = bool(getattr(args, "force", False))
    destination = destination_of(out, force) if out else None
    now = ctx.now()
    with ctx.unit_of_work() as session:
        issued = prepare(session)
        if spec is not None:
            server = servers.find_server_by_id(session, issued.server_id)
            links.save_connection(session, ctx.vault, actor, server, spec, now)
        current = links.connection_of(session, ctx.vault, issued.server_id)
        if current is None:
            raise InvalidInput(f"“{issued.server_name}” is not connected to an MDM server.")
        path = None
        if destination is not None:
            path = destination
            if destination.is_dir():
                path = check_file(destination / issued.filename, force)
            write_private(path, issued.content, force=force)
        try:
            activation = installs.issue_through(session, actor, issued.token_id, current, now)
            session.commit()
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
    for warning in issued.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if path is not None:
        print(f"Wrote {path} for “{issued.server_name}”.")
    return _report_install(ctx, issued, bool(activation.superseded))


def _report_install(ctx: AppContext, issued: IssuedToken, superseded: bool) -> int:
    name = issued.server_name
    with ctx.unit_of_work(readonly=True) as session:
        install_id = installs.install_id_of(session, issued.token_id)
    if install_id is None:
        raise InstallError(f"“{name}” is not connected to an MDM server.")
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    if outcome is None or outcome.skipped:
        print(f"Another mdmbot process is installing the token for “{name}” right now.")
        return 0
    if outcome.installed:
        expiry = f"{issued.expires_at:%Y-%m-%dT%H:%M:%SZ}"
        print(f"Installed in {outcome.label} — waiting for its first use; it expires {expiry}.")
        return 0
    previous = " and the previous one no longer works" if superseded else ""
    print(
        f"mdmbot: the new token for “{name}” is active{previous}, but it could not be installed "
        f"in {outcome.label}: {outcome.error} {_next_step(name, outcome.error)}",
        file=sys.stderr,
    )
    return 1


def _next_step(name: str, error: str | None) -> str:
    """What happens after a failed install: the sweep retries, unless the API key was refused."""
    if not retry_helps(error):
        return (
            "Retrying cannot help: give mdmbot the new API key (`mdmbot server connect "
            f"{name} --mdm … --mdm-api-key-file FILE`)."
        )
    return f"It will be retried; `mdmbot token push {name}` retries now."


def server_add(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server add NAME --mdm …: fetch the certificate, issue, install."""
    if args.cert:
        raise InvalidInput("Give either --cert or --mdm (which fetches the certificate), not both.")
    spec = spec_from(ctx, args)
    loaded = fetch_certificate(ctx, spec, args.name)
    return issue_and_install(ctx, _operator(args), args, spec, commands.adding(ctx, args, loaded))


def server_connect(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server connect: NanoDEP and Fleet get a token for their own key; a command the
    active token."""
    if args.mdm is None:
        raise InvalidInput("Say which MDM server installs the tokens: --mdm nanodep|fleet|command.")
    spec = spec_from(ctx, args)
    actor, vault = _operator(args), ctx.vault
    if spec.kind == "command":
        with ctx.unit_of_work() as session:
            server = servers.find_server(session, args.name)
            links.save_connection(session, vault, actor, server, spec, ctx.now())
            name = server.name
        print(f"Connected “{name}” to {spec.label()}.")
        return token_push(ctx, args)
    if ctx.settings.apple_mode:
        return apple_connect(ctx, args, spec)
    loaded = fetch_certificate(ctx, spec, args.name)
    print(f"Connecting “{args.name}” to {spec.label()}: a new token replaces the active one.")
    return replace_connected(ctx, args, loaded, spec)


def apple_connect(ctx: AppContext, args: argparse.Namespace, spec: ConnectionSpec) -> int:
    """Apple mode: the connection is recorded without fetching a certificate (NanoDEP draws a
    new key pair on each fetch, orphaning the token Apple encrypted to the current one), unless
    --fetch-certificate asks for one, which then replaces the certificate at Apple."""
    out = check_file(Path(args.out).expanduser().absolute(), args.force) if args.out else None
    loaded = fetch_certificate(ctx, spec, args.name) if args.fetch_certificate else None
    if loaded is not None and out is not None:
        token_files.write_or_refuse(out, loaded.pem.encode(), force=args.force)
    actor, now = _operator(args), ctx.now()
    with ctx.unit_of_work() as session:
        server = servers.find_server(session, args.name)
        links.save_connection(session, ctx.vault, actor, server, spec, now)
        if loaded is not None:
            intake.keep_certificate(session, actor, server, loaded, now)
        name, active = server.name, issuance.active_token_id(session, server.id or 0)
    print(f"Connected “{name}” to {spec.label()}.")
    if loaded is not None:
        where = f"written to {args.out}" if args.out else "below"
        print(
            f"Fetched a new certificate from {spec.label()} ({where}): replace the server's "
            f"certificate in {ctx.settings.apple_portal} with it, then download a new token there "
            "and "
            f"`mdmbot token import {name} FILE`; the current token no longer opens in the MDM "
            "server."
        )
        if not args.out:
            print(loaded.pem.strip())
        return 0
    if active is None:
        portal = ctx.settings.apple_portal
        print(
            f"Its certificate was not fetched (the one in {portal} stays valid). "
            f"Download the server's token in {portal} and `mdmbot token import {name} "
            "FILE`, or drop it in the bot's DM: mdmbot installs it."
        )
        return 0
    return token_push(ctx, args)


def server_disconnect(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server disconnect."""
    with ctx.unit_of_work() as session:
        server = servers.find_server(session, args.name)
        links.disconnect(session, _operator(args), server, ctx.now())
    print(f"Disconnected “{server.name}”; its tokens go to whoever asks for them, as files.")
    return 0


def token_push(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token push: install the active token now."""
    with ctx.unit_of_work() as session:
        server = servers.find_server(session, args.name)
        install_id = installs.push_active(session, server, _operator(args).user_id, ctx.now())
        name = server.name
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    if outcome is None or outcome.skipped:
        print(f"Another mdmbot process is installing the token for “{name}” right now.")
        return 0
    if outcome.installed:
        print(f"Installed the active token for “{name}” in {outcome.label}.")
        return 0
    raise InstallError(
        f"Could not install the token for “{name}” in {outcome.label}: {outcome.error} "
        f"{_next_step(name, outcome.error)}"
    )


def connected(ctx: AppContext, name: str) -> bool:
    """Whether the server called `name` installs its tokens through a connection."""
    return connection(ctx, name) is not None


def connection(ctx: AppContext, name: str) -> ConnectionSpec | None:
    """The connection of the server called `name`, without its API key."""
    with ctx.unit_of_work(readonly=True) as session:
        server_id = servers.find_server(session, name).id
        row = links.connection_row(session, server_id)
        return links.describe_spec(row) if row is not None else None


def replace_connected(
    ctx: AppContext,
    args: argparse.Namespace,
    cert: LoadedCertificate,
    spec: ConnectionSpec | None = None,
) -> int:
    """A new public key and its token, installed (cert replace; server connect with `spec`)."""
    return issue_and_install(
        ctx, _operator(args), args, spec, replacing(ctx, args, cert)
    )


def replacing(
    ctx: AppContext, args: argparse.Namespace, cert: LoadedCertificate
) -> Callable[[Session], IssuedToken]:
    """How `cert replace` prepares its token: a new public key for the server `args.name`."""
    actor, vault = _operator(args), ctx.vault
    return lambda session: servers.replace_certificate(
        session, vault, actor, args.name, cert, ctx.now()
    )


def renewing(ctx: AppContext, args: argparse.Namespace) -> Callable[[Session], IssuedToken]:
    """How `token issue` prepares its token (the server's consumer key kept unless asked)."""
    actor, vault = _operator(args), ctx.vault
    return lambda session: issuance.issue_token(
        session,
        vault,
        actor,
        servers.find_server(session, args.name),
        ctx.now(),
        new_consumer_key=bool(getattr(args, "new_consumer_key", False)),
    )


def cert_replace(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot cert replace."""
    cert = load_certificate(commands._read_cert(args.cert), now=ctx.now())
    return token_files.issue_to_file(
        ctx,
        _operator(args),
        args,
        replacing(ctx, args, cert),
        replacing="A new certificate and token",
    )


def token_issue(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token issue."""
    return token_files.issue_to_file(
        ctx, _operator(args), args, renewing(ctx, args), replacing="A new token"
    )


def server_add_any(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot server add: with --mdm the certificate is fetched, else --cert is required."""
    if args.mdm is not None:
        return server_add(ctx, args)
    if not args.cert:
        raise InvalidInput("Give the public key certificate (--cert FILE) or a connection (--mdm).")
    return commands.server_add(ctx, args)


def token_issue_any(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot token issue: a connected server's token is installed, else written to a file."""
    spec = connection(ctx, args.name)
    if spec is not None:
        what, also = "A new token", ""
        if getattr(args, "new_consumer_key", False):
            what = "A new token with a new consumer key"
            if spec.kind == "nanodep":
                also = (
                    f" {spec.label()} refuses a changed consumer key unless told to replace the "
                    "token it holds: mdmbot uploads it with force=1, over this server's token."
                )
        if token_files.ask_replacing(ctx, args, what, also) is None:
            return 1
        return issue_and_install(ctx, _operator(args), args, None, renewing(ctx, args))
    return token_issue(ctx, args)


def cert_replace_any(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot cert replace: the new token goes through the connection when there is one."""
    if connected(ctx, args.name):
        cert = load_certificate(commands._read_cert(args.cert), now=ctx.now())
        if token_files.ask_replacing(ctx, args, "A new certificate and token") is None:
            return 1
        return replace_connected(ctx, args, cert)
    return cert_replace(ctx, args)
