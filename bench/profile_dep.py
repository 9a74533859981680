"""Where `/session` and `/account` spend their CPU: the DEP WSGI app called in-process.

`python -m bench.profile_dep [--pairs N] [--profile]` seeds SQLite with 16 servers (as
`bench/dep.py` does), builds the device assignment service as `mdmbot serve --dep-port` does,
then sends N signed `/session` + `/account` pairs straight through the WSGI app (no sockets) and
prints the CPU per request; `--profile` prints cProfile's top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

from bench.dep import _creds
from bench.fake import start_fake
from bench.seed import add_servers, bench_settings
from bot.context import AppContext
from bot.dep.app import build_dep_app

SERVERS = 16


def call(app: Any, path: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """One GET through the WSGI app; the status line and the body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8443",
        "HTTP_USER_AGENT": "nanodep-g-o-dep/0",
        "HTTP_X_SERVER_PROTOCOL_VERSION": "7",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(status)))
    return seen[0], body


def pair(app: Any, creds: list[str]) -> None:
    """`/session` signed as NanoDEP signs it, then `/account` with the session."""
    client = Client(creds[0], creds[1], creds[2], creds[3], signature_method=SIGNATURE_HMAC_SHA1)
    _, headers, _ = client.sign("http://127.0.0.1:8443/session", "GET")
    session_then_account(app, headers["Authorization"])


def session_then_account(app: Any, authorization: str) -> None:
    """`/session` with this Authorization header, then `/account` with the session it opens."""
    status, body = call(app, "/session", {"Authorization": authorization})
    if not status.startswith("200"):
        raise RuntimeError(f"/session answered {status}: {body[:200]!r}")
    key = json.loads(body)["auth_session_token"]
    status, body = call(app, "/account", {"X-ADM-Auth-Session": key})
    if not status.startswith("200"):
        raise RuntimeError(f"/account answered {status}: {body[:200]!r}")


def main() -> int:
    """Seed, warm up, measure (and optionally profile) N pairs."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_dep")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    fake = start_fake()
    with tempfile.TemporaryDirectory(prefix="mdmbot-profile-dep-") as root:
        ctx = AppContext(bench_settings(root, fake.url))
        ctx.prepare_database()
        add_servers(ctx, SERVERS, datetime.now(UTC))
        app = build_dep_app(ctx)
        creds = _creds(ctx)
        for index in range(50):
            pair(app, creds[index % len(creds)])
        profile = cProfile.Profile() if args.profile else None
        started, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        for index in range(args.pairs):
            pair(app, creds[index % len(creds)])
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - started, time.perf_counter() - wall
        print(f"{cpu / args.pairs / 2 * 1000:.2f} ms CPU, {wall / args.pairs / 2 * 1000:.2f} ms "
              "wall per request (signing in the client included)")
        if profile is not None:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
