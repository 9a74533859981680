"""The DEP baseline: a bare WSGI app answering a constant JSON, on mdmbot's own HTTP server.

`python -m bench.dep_bare --port N [--workers W]` serves it with the same front and thread count
as `mdmbot serve --http --workers W --dep-port` (the event-loop front for one process, gunicorn
workers for several), so the difference is mdmbot's own work (Falcon, OAuth, database).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from bot.http import HttpServer, Listener, StartResponse, WorkerHooks, serve_workers

BODY = b'{"auth_session_token":"bare","server_name":"bare"}'
THREADS = {1: 4, 2: 8}  # `mdmbot serve --http`: 4 threads in one process, 8 per worker


def constant_json(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Every request: 200 and the same JSON."""
    start_response(
        "200 OK",
        [("Content-Type", "application/json;charset=UTF8"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]


def main() -> int:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.dep_bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    listeners = [Listener("bare", "127.0.0.1", args.port, constant_json)]
    if args.workers > 1:
        idle = WorkerHooks(start=lambda: None, stop=lambda: None)
        return serve_workers(listeners, args.workers, THREADS[2], idle)
    HttpServer(listeners, THREADS[1]).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
