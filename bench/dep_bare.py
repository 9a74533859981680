"""The DEP baseline: a bare WSGI app answering a constant JSON, on mdmbot's own HTTP server.

`python -m bench.dep_bare --port N` serves it with the same waitress `HttpServer` and thread count
as `mdmbot serve --dep-port`, so the difference is mdmbot's own work (Falcon, OAuth, database).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from bot.http import HttpServer, Listener, StartResponse

BODY = b'{"auth_session_token":"bare","server_name":"bare"}'
THREADS = 4  # `mdmbot serve --http` serves every listener from one pool of 4 threads


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
    args = parser.parse_args()
    HttpServer([Listener("bare", "127.0.0.1", args.port, constant_json)], THREADS).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
