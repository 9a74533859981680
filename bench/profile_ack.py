"""Where one `/mdm list` ack spends its CPU: the Slack WSGI app called in-process.

`python -m bench.profile_ack [--app mdmbot|bare] [--requests N]` seeds SQLite with 50 servers
(as `bench/ack.py` does), builds mdmbot's bolt app and `SlackWsgi` as `mdmbot serve --http`
does (or the bare bolt app), warms it up, then sends N signed `/mdm list` requests straight
through the WSGI app (no sockets: the HTTP server's share is left out) and prints the CPU per
request. bolt runs the listener on its own thread pool, so sample it with a profiler that sees
every thread:

    py-spy record --format raw -r 1000 -o list.txt -- python -m bench.profile_ack --app mdmbot
    python -m bench.profile_ack --summarize list.txt     # inclusive share of each function
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bench.bare_app import build_bare_app
from bench.common import ADMIN, BOT_TOKEN, SIGNING_SECRET, sign, slash_command_body
from bench.fake import start_fake
from bench.seed import add_servers, bench_settings
from bot.context import AppContext
from bot.http import SlackWsgi
from bot.runtime import Runtime
from bot.slack.app import build_app, build_services
from core.people import persons as people

SERVERS = 50
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def call(app: WsgiApp, seq: int, root: str) -> tuple[str, bytes]:
    """One signed `/mdm list` through the WSGI app; the status line and the body."""
    body = slash_command_body("list", seq, root)
    ts = int(time.time())
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/slack/events",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": str(ts),
        "HTTP_X_SLACK_SIGNATURE": sign(body, ts),
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(status)))
    return seen[0], body


def run(app: WsgiApp, requests: int, root: str, *, listing: bool) -> float:
    """CPU seconds per request (every thread of this process) after a warm-up."""
    for seq in range(50):
        status, body = call(app, seq, root)
        if not status.startswith("200") or (b"MDM servers" in body) != listing:
            raise RuntimeError(f"/mdm list answered {status}: {body[:200]!r}")
    started = time.process_time()
    for seq in range(requests):
        call(app, 1000 + seq, root)
    return (time.process_time() - started) / requests


def summarize(path: str, top: int) -> None:
    """Inclusive share of samples per function from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path, encoding="utf-8"):
        stack, _, samples = line.rstrip().rpartition(" ")
        if "SlackWsgi.__call__" not in stack and "thread_runner" not in stack:
            continue
        total += int(samples)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(samples)
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


def main() -> int:
    """Profile mdmbot's `/mdm list` and the bare app's ack."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ack")
    parser.add_argument("--app", choices=["mdmbot", "bare"], default="mdmbot")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--summarize", metavar="PY_SPY_RAW", help="summarise a py-spy profile")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.top)
        return 0
    fake = start_fake()
    os.environ.update(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=fake.url, SLACK_SIGNING_SECRET=SIGNING_SECRET
    )
    try:
        with tempfile.TemporaryDirectory(prefix="mdmbot-profile-") as tmp:
            ctx = AppContext(bench_settings(tmp, fake.url))
            ctx.prepare_database()
            add_servers(ctx, SERVERS, datetime.now(UTC))
            with ctx.unit_of_work() as session:
                people.bootstrap_admins(session, [ADMIN], datetime.now(UTC))
            svc = build_services(ctx)
            runtime = Runtime(ctx, svc, scheduler=False)
            if args.app == "mdmbot":
                bolt = build_app(svc, signing_secret=None)
            else:
                bolt = build_bare_app()
            app = SlackWsgi(bolt, runtime.health, signing_secret=SIGNING_SECRET)
            per_request = run(app, args.requests, fake.root, listing=args.app == "mdmbot")
            print(f"{args.app}: {per_request * 1000:.2f} ms CPU per /mdm list request")
            svc.background.shutdown(wait=True)
            ctx.engine.dispose()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
