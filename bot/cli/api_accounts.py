"""The `mdmbot api-account …` commands: accounts of the served School Manager API."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from bot.cli.commands import _json, _operator, _table
from bot.cli.devices import action_adder
from bot.cli.output import safe
from bot.cli.output import when as _when
from bot.cli.token_files import check_file, write_or_refuse
from bot.context import AppContext
from core.asm import accounts


def add_parsers(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `api-account` and its actions to the command line."""
    add = action_adder(groups, "api-account", "create, list and revoke School Manager API accounts")
    p = add("create", account_create, "create an API account and write its private key once")
    p.add_argument("label", metavar="LABEL", help="what will use it, e.g. “Inventory script”")
    p.add_argument("--key-out", required=True, metavar="FILE", help="where to write the key")
    p.add_argument("--scope", default="school", help="school (default) or business")
    p.add_argument("--json", action="store_true")
    p = add("list", account_list, "list API accounts (never their keys)")
    p.add_argument("--json", action="store_true")
    p = add("revoke", account_revoke, "revoke an API account: its access tokens stop at once")
    p.add_argument("client_id", metavar="CLIENT_ID")


def account_create(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot api-account create."""
    path = check_file(Path(args.key_out).expanduser().absolute(), force=False)
    with ctx.unit_of_work() as session:
        created = accounts.create_account(
            session, _operator(args), args.label, args.scope, ctx.now()
        )
        write_or_refuse(
            path, created.private_key_pem, force=False, exists="a key file is never overwritten"
        )
        try:
            session.commit()
        except BaseException:
            path.unlink(missing_ok=True)  # the account was never recorded: its key is useless
            raise
    view = created.account
    if args.json:
        _json({"client_id": view.client_id, "key_id": view.key_id, "scope": view.scope,
               "label": view.label})  # fmt: skip
        return 0
    print(f"Created the API account “{safe(view.label)}” ({view.scope}).")
    print(f"Client ID: {view.client_id}")
    print(f"Key ID:    {view.key_id}")
    print(f"Private key written to {path} (mode 0600): it is not kept anywhere else.")
    return 0


def account_list(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot api-account list."""
    with ctx.unit_of_work(readonly=True) as session:
        views = accounts.list_accounts(session, _operator(args))
    if args.json:
        _json([asdict(v) for v in views])
        return 0
    if not views:
        print("No API accounts yet; create one with `mdmbot api-account create LABEL "
              "--key-out FILE`.")  # fmt: skip
        return 0
    rows: list[tuple[str, ...]] = [
        (v.client_id, v.scope, v.label, _when(v.created_at),
         f"revoked {_when(v.revoked_at)}" if v.revoked_at else "active")
        for v in views
    ]  # fmt: skip
    _table(("CLIENT ID", "SCOPE", "LABEL", "CREATED", "STATE"), rows)
    return 0


def account_revoke(ctx: AppContext, args: argparse.Namespace) -> int:
    """mdmbot api-account revoke."""
    with ctx.unit_of_work() as session:
        view = accounts.revoke_account(session, _operator(args), args.client_id, ctx.now())
    print(f"Revoked {view.client_id} (“{safe(view.label)}”): its access tokens no longer work.")
    return 0
