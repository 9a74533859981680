"""A closed-loop load generator for signed `/mdm` commands, run in its own process.

`python -m bench.loadgen` reads a JSON spec on stdin and prints a JSON list of latencies
(seconds, one per measured request) on stdout. Each request opens a new connection, as Slack's
deliveries do, and is timed from connect to the last byte of the response. Warm-up requests are
sent first and not measured. The loop is bounded: `count` requests, or `deadline` seconds.

One `selectors` loop drives non-blocking sockets: the generator shares the machine's cores with
the servers it measures, and asyncio's streams cost it 0.36 ms of CPU a request, a fifth of what
`/mdm list` cost mdmbot; this loop costs 0.2 ms (bench/README.md). Each request is built and
signed as it is sent: its trigger_id carries that moment, from which the modal's lag is timed.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
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


def _failed(code: int) -> OSError:
    """The error a failed non-blocking connect reported (an errno)."""
    return OSError(code, errno.errorcode.get(code, str(code)))


class _Exchange:
    """One request on its own connection, from connect to the server's close."""

    def __init__(self, index: int, payload: bytes, address: tuple[str, int]) -> None:
        self.index = index
        self.payload = payload
        self.answer = bytearray()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.started = time.perf_counter()
        code = self.sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise _failed(code)

    def writable(self) -> None:
        """Connected: send the whole request (a few hundred bytes fit the socket's buffer)."""
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise _failed(code)
        sent = self.sock.send(self.payload)
        self.payload = self.payload[sent:]

    def readable(self) -> bool:
        """Read what arrived; True once the server closed the connection."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self.answer += chunk


def run(spec: Spec) -> dict[str, Any]:
    """Send warmup + count requests with `concurrency` in flight.

    Returns the latency of every measured answer (whatever its status), the count of each HTTP
    status, and the connection errors.
    """
    total = spec.warmup + spec.count
    address = (spec.host, spec.port)
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    issued = 0
    started = time.perf_counter()
    stop_at = started + spec.deadline

    def start_next() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < stop_at:
            index = issued
            issued += 1
            try:
                exchange = _Exchange(index, _request(spec, spec.seq_start + index), address)
            except OSError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            selector.register(exchange.sock, selectors.EVENT_WRITE, exchange)
            return

    def finish(exchange: _Exchange, error: OSError | None) -> None:
        selector.unregister(exchange.sock)
        exchange.sock.close()
        if error is not None:
            errors.append(f"{type(error).__name__}: {error}")
        elif exchange.index >= spec.warmup:
            latencies.append(time.perf_counter() - exchange.started)
            status = str(int(bytes(exchange.answer[9:12]) or 0))
            statuses[status] = statuses.get(status, 0) + 1
        start_next()

    for _ in range(spec.concurrency):
        start_next()
    while selector.get_map():
        for key, events in selector.select(timeout=max(0.01, stop_at - time.perf_counter())):
            exchange: _Exchange = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    exchange.writable()
                    if not exchange.payload:
                        selector.modify(exchange.sock, selectors.EVENT_READ, exchange)
                elif exchange.readable():
                    finish(exchange, None)
            except OSError as exc:
                finish(exchange, exc)
        if time.perf_counter() > stop_at + 30:
            break
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
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
