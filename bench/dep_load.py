"""A closed-loop load generator for `/session` then `/account` pairs, run in its own process.

`python -m bench.dep_load` reads a JSON spec on stdin and prints JSON latencies on stdout. Each
worker plays one MDM server (its own token): it signs `GET /session` with oauthlib as NanoDEP
does (a fresh nonce and timestamp each time), then calls `GET /account` with the session it got.
Every request opens a new connection and is timed from connect to the last byte of the answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

UA = "nanodep-g-o-dep/0"


@dataclass(frozen=True)
class Spec:
    """What to send."""

    host: str
    port: int
    creds: list[list[str]]  # consumer key, consumer secret, access token, access secret
    concurrency: int
    pairs: int
    warmup: int
    deadline: float = 120.0


def _head(spec: Spec, path: str, extra: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\nUser-Agent: {UA}\r\n"
        "Content-Type: application/json;charset=UTF8\r\nAccept: application/json;charset=UTF8\r\n"
        f"X-Server-Protocol-Version: 7\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


async def _get(spec: Spec, payload: bytes) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    try:
        writer.write(payload)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    return time.perf_counter() - started, int(answer[9:12] or 0), answer.partition(b"\r\n\r\n")[2]


async def run(spec: Spec) -> dict[str, Any]:
    """Send warmup + pairs pairs with `concurrency` workers in flight."""
    total, issued = spec.warmup + spec.pairs, 0
    result: dict[str, Any] = {
        "session": [],
        "account": [],
        "pair": [],
        "statuses": {},
        "errors": [],
    }
    stop_at = time.perf_counter() + spec.deadline
    url = f"http://{spec.host}:{spec.port}/session"

    def count(status: int) -> None:
        result["statuses"][str(status)] = result["statuses"].get(str(status), 0) + 1

    async def worker(index: int) -> None:
        nonlocal issued
        ck, cs, at, secret = spec.creds[index % len(spec.creds)]
        client = Client(ck, cs, at, secret, signature_method=SIGNATURE_HMAC_SHA1)
        while issued < total and time.perf_counter() < stop_at:
            number = issued
            issued += 1
            auth = client.sign(url, "GET")[1]["Authorization"]
            try:
                first, status, body = await _get(
                    spec, _head(spec, "/session", f"Authorization: {auth}\r\n")
                )
                key = json.loads(body)["auth_session_token"] if status == 200 else "none"
                second, status2, _ = await _get(
                    spec, _head(spec, "/account", f"X-ADM-Auth-Session: {key}\r\n")
                )
            except (OSError, ValueError) as exc:
                result["errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            if number >= spec.warmup:
                result["session"].append(first)
                result["account"].append(second)
                result["pair"].append(first + second)
                count(status)
                count(status2)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(spec.concurrency)))
    result["wall"] = time.perf_counter() - started
    result["sent"] = issued
    result["error_count"] = len(result["errors"])
    result["errors"] = result["errors"][:20]
    return result


def main() -> int:
    """Read the spec from stdin, print the result as JSON."""
    spec = Spec(**json.loads(sys.stdin.read()))
    print(json.dumps(asyncio.run(run(spec))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
