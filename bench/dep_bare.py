"""The DEP baseline: a bare WSGI app answering a constant JSON, on mdmbot's own HTTP server.

`python -m bench.dep_bare --port N [--workers W] [--port-b M]` serves it with the same front and
thread count as `mdmbot serve --http --workers W --dep-port` (a granian server of W worker
processes per listener), so the difference is mdmbot's own work (Falcon, OAuth, database);
with `--port-b` a second listener serves it too, on servers of its own (`bench/front.py`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from bot.http import Listener, StartResponse, WorkerHooks, every_request, serve_processes

BODY = b'{"auth_session_token":"bare","server_name":"bare"}'
THREADS = 8  # `mdmbot serve --http`: 8 app threads per worker and listener


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
    parser.add_argument("--port-b", type=int, default=None)
    args = parser.parse_args()
    listeners = [Listener("bare", "127.0.0.1", args.port, constant_json, on_loop=every_request)]
    if args.port_b is not None:
        listeners.append(
            Listener("bare B", "127.0.0.1", args.port_b, constant_json, on_loop=every_request)
        )
    return serve_processes(listeners, args.workers, THREADS, WorkerHooks(stop=lambda: None))


if __name__ == "__main__":
    raise SystemExit(main())
