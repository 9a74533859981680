"""A closed-loop load generator for signed `/mdm` commands, run in its own process.

`python -m bench.loadgen` reads a JSON spec on stdin and prints a JSON list of latencies
(seconds, one per measured request) on stdout. Each request opens a new connection, as Slack's
deliveries do, and is timed from connect to the last byte of the response. Warm-up requests are
sent first and not measured. The loop is bounded: `count` requests, or `deadline` seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.common import sign, slash_command_body


@dataclass(frozen=True)
class Spec:
    """What to send."""

    host: str
    port: int
    text: str
    concurrency: int
    count: int
    warmup: int
    response_root: str
    seq_start: int
    deadline: float = 120.0


def _request(spec: Spec, seq: int) -> bytes:
    """The raw HTTP request for one signed `/mdm` command."""
    body = slash_command_body(spec.text, seq, spec.response_root)
    timestamp = int(time.time())
    head = (
        f"POST /slack/events HTTP/1.1\r\n"
        f"Host: {spec.host}:{spec.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Slack-Request-Timestamp: {timestamp}\r\n"
        f"X-Slack-Signature: {sign(body, timestamp)}\r\n"
        "User-Agent: Slackbot 1.0 (+https://api.slack.com/robots)\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def _one(spec: Spec, seq: int) -> tuple[float, int]:
    """Send one request on a new connection; return (seconds, HTTP status)."""
    payload = _request(spec, seq)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    try:
        writer.write(payload)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    return elapsed, int(answer[9:12] or 0)


async def run(spec: Spec) -> dict[str, Any]:
    """Send warmup + count requests with `concurrency` in flight.

    Returns the latency of every measured answer (whatever its status), the count of each HTTP
    status, and the connection errors.
    """
    total = spec.warmup + spec.count
    issued = 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    stop_at = time.perf_counter() + spec.deadline

    async def worker() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < stop_at:
            index = issued
            issued += 1
            try:
                elapsed, status = await _one(spec, spec.seq_start + index)
            except (OSError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if index >= spec.warmup:
                latencies.append(elapsed)
                statuses[str(status)] = statuses.get(str(status), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return {
        "latencies": latencies,
        "statuses": statuses,
        "errors": errors[:20],
        "error_count": len(errors),
        "wall": time.perf_counter() - started,
        "sent": issued,
    }


def main() -> int:
    """Read the spec from stdin, print the result as JSON."""
    spec = Spec(**json.loads(sys.stdin.read()))
    print(json.dumps(asyncio.run(run(spec))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
