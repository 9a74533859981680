"""mdmbot's own CPU per request on the paths issue 35 measures, on SQLite and PostgreSQL.

`python -m bench.profile_cpu --path list|add|dep|bare [--db sqlite|postgresql] [--requests N]
[--profile] [--statements]` seeds a database with 50 servers (a fresh PostgreSQL schema under
`MDMBOT_BENCH_DATABASE_URL` or `MDMBOT_TEST_DATABASE_URL` for `--db postgresql`), builds the bolt
app (`/mdm list`, `/mdm add`) or the device assignment service (`/session` + `/account` pairs)
as `mdmbot serve` does and calls it in-process: bolt's `dispatch` with the ack taken inline, as
the HTTP front hands it a request, so the front's own share is left out. The fake Slack runs in
a child process, so the CPU counted (`time.process_time`, every thread of this process) is
mdmbot's alone, `views.open`'s client side included. `--profile` runs every pool inline and
prints cProfile's top functions; `--statements` prints the SQL statements per request.
`--path bare` is the floor: a bolt App whose only listener acks `/mdm`, dispatched the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client
from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient
from sqlalchemy import event

from bench.common import ADMIN, BOT_TOKEN, SIGNING_SECRET, pg_schema, slash_command_body
from bench.dep import _creds
from bench.fake import start_fake
from bench.profile_dep import session_then_account
from bench.seed import add_servers, bench_settings
from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.slack import acks
from bot.slack.app import build_app, build_services
from bot.slack.services import BotServices
from core.people import persons as people

SERVERS = 50


class Inline:
    """A pool that runs each job at once on the caller's thread (for the profiler)."""

    pending = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn` now."""
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Nothing runs later."""


@contextmanager
def fake_slack() -> Iterator[tuple[str, str]]:
    """The fake Slack in a child process: its API URL and its root."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.profile_cpu", "--serve-fake"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    url, root = child.stdout.readline().split()
    try:
        yield url, root
    finally:
        child.stdin.close()
        child.wait(10)


def serve_fake() -> None:
    """Serve the fake until stdin closes."""
    fake = start_fake()
    print(fake.url, fake.root, flush=True)
    sys.stdin.read()
    fake.stop()


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    """None (SQLite in the data directory) or the URL of a fresh PostgreSQL schema."""
    if kind == "sqlite":
        yield None
        return
    base = os.environ.get("MDMBOT_BENCH_DATABASE_URL") or os.environ["MDMBOT_TEST_DATABASE_URL"]
    with pg_schema(base) as url:
        yield url


def bare_app(api_url: str) -> App:
    """A bolt App whose only listener acks `/mdm` (no signature check, as for mdmbot's here)."""
    app = App(
        client=WebClient(token=BOT_TOKEN, base_url=api_url),
        signing_secret=SIGNING_SECRET,
        request_verification_enabled=False,
    )

    @app.command("/mdm")
    def on_mdm(ack: Ack) -> None:
        ack()

    return app


def slack_call(bolt: Any, text: str, root: str) -> Callable[[int], None]:
    """One `/mdm TEXT` dispatched as the front dispatches it."""

    def call(seq: int) -> None:
        body = slash_command_body(text, seq, root).decode()
        request = BoltRequest(
            body=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
            context={"mdmbot_verified": True, "ack": acks.expect()},
        )
        try:
            response = bolt.dispatch(request)
        finally:
            acks.forget()
        if response.status != 200:
            raise RuntimeError(f"/mdm {text} answered {response.status}: {response.body[:200]}")

    return call


def _signed(creds: list[str]) -> str:
    """A `/session` Authorization header signed with one token's four credentials."""
    key, secret, token, token_secret = creds
    client = Client(key, secret, token, token_secret, signature_method=SIGNATURE_HMAC_SHA1)
    return str(client.sign("http://127.0.0.1:8443/session", "GET")[1]["Authorization"])


def dep_call(ctx: AppContext, calls: int) -> Callable[[int], None]:
    """One `/session` + `/account` pair, by one of the seeded tokens in turn, signed beforehand
    (as NanoDEP signs: oauthlib, HMAC-SHA1) so that the client's signing is not counted."""
    app, creds = build_dep_app(ctx), _creds(ctx)
    headers = [_signed(creds[n % len(creds)]) for n in range(calls)]
    ready = iter(headers)

    def call(seq: int) -> None:
        session_then_account(app, next(ready))

    return call


def settle(svc: BotServices) -> None:
    """Wait for the work queued after the acks (the modals) to end."""
    queue = getattr(svc.background, "_work_queue", None)  # none under --profile: jobs run inline
    while svc.after_ack.pending or (queue is not None and queue.qsize()):
        time.sleep(0.001)


def measure(call: Callable[[int], None], requests: int, after: Callable[[], None]) -> float:
    """CPU seconds of this process per request, after a warm-up."""
    for seq in range(100):
        call(seq)
    after()
    started = time.process_time()
    for seq in range(requests):
        call(1000 + seq)
    after()
    return (time.process_time() - started) / requests


def statements(
    ctx: AppContext, call: Callable[[int], None], per: int, after: Callable[[], None]
) -> float:
    """SQL statements per request over 100 calls."""
    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1

    event.listen(ctx.engine, "before_cursor_execute", count)
    for seq in range(100):
        call(5000 + seq)
    after()
    event.remove(ctx.engine, "before_cursor_execute", count)
    return seen[0] / 100 / per


def run(args: argparse.Namespace, url: str, root: str, database_url: str | None) -> None:
    """Seed, build, measure and profile one path."""
    with tempfile.TemporaryDirectory(prefix="mdmbot-profile-cpu-") as data:
        ctx = AppContext(bench_settings(data, url, database_url))
        ctx.prepare_database()
        add_servers(ctx, SERVERS, datetime.now(UTC))
        with ctx.unit_of_work() as session:
            people.bootstrap_admins(session, [ADMIN], datetime.now(UTC))
        per, after, svc = 1, (lambda: None), None
        if args.path == "dep":
            call, per = dep_call(ctx, 2 * args.requests + 300), 2
        elif args.path == "bare":
            call = slack_call(bare_app(url), "list", root)
        else:
            svc = build_services(ctx)
            call = slack_call(build_app(svc, signing_secret=None), args.path, root)
            after = partial(settle, svc)
        cpu = measure(call, args.requests, after) / per
        print(f"{args.path} on {args.db}: {cpu * 1000:.3f} ms CPU per request")
        if args.statements:
            print(f"  {statements(ctx, call, per, after):.1f} SQL statements per request")
        if args.profile:
            if svc is not None:
                svc.after_ack = svc.background = Inline()  # type: ignore[assignment]
            profile = cProfile.Profile()
            profile.enable()
            for seq in range(args.requests):
                call(10000 + seq)
            profile.disable()
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
        if svc is not None:
            settle(svc)
        ctx.engine.dispose()


def main() -> int:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_cpu")
    parser.add_argument("--path", choices=["list", "add", "dep", "bare"], default="list")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake()
        return 0
    os.environ.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET)
    with fake_slack() as (url, root), database(args.db) as database_url:
        run(args, url, root, database_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
