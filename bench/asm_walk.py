"""The client of the School Manager API page bench, run in its own process.

`python -m bench.asm_walk` reads a JSON spec on stdin (`host`, `port`, `token`, `walks`, `limit`)
and prints JSON on stdout: the seconds of every page and the devices each walk saw. A walk starts
at `GET /v1/orgDevices?limit=…` and follows `links.next` to the end. Each page is one request on
a new connection (as `curl` or a script makes them), timed from connect to the last byte.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

NEXT = re.compile(rb'"next":"([^"]+)"')


def page(host: str, port: int, target: str, token: str) -> tuple[float, bytes]:
    """One page on a new connection: (seconds from connect to the last byte, body)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("GET", target, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {target}: HTTP {response.status}: {body[:200]!r}")
    return elapsed, body


def walk(spec: dict[str, Any]) -> tuple[list[float], int]:
    """Every page of one walk: seconds per page, devices seen."""
    times, seen = [], 0
    target = f"/v1/orgDevices?limit={spec['limit']}"
    while target:
        elapsed, body = page(spec["host"], spec["port"], target, spec["token"])
        times.append(elapsed)
        seen += body.count(b'"type":"orgDevices"')
        found = NEXT.search(body)
        target = ""
        if found:
            link = urlsplit(found[1].decode())
            target = f"{link.path}?{link.query}"
    return times, seen


def main() -> int:
    """Read the spec, walk, print the result as JSON."""
    spec = json.loads(sys.stdin.read())
    walks = [walk(spec) for _ in range(spec["walks"])]
    print(json.dumps({"pages": [t for t, _ in walks], "seen": [s for _, s in walks]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
