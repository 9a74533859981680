"""The HTTP front alone: a constant-JSON WSGI app on two listeners, then slow clients on one.

`bench.dep_bare --port A --port-b B --workers W` (the front `mdmbot serve --http` runs) answers
16 clients in flight, each request on a new connection (`bench.loadgen`); then 1,000 clients
trickle a header into A (`tests/slowloris.py`, a line every 2 s, reconnecting when cut) while
B is asked every 0.1 s. The front before granian (the event loop and h11 of `bot/http/` up to
issue 35) cannot be imported any more: its figures, measured the same way, are in
bench/README.md ("The HTTP front").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from typing import Any

from bench.common import (
    ROOT,
    Row,
    Section,
    child_env,
    free_port,
    ms,
    percentile,
    python,
    run_client,
    stop_process,
    tree_cpu_seconds,
)
from bench.loadgen import Spec

CONCURRENCY = 16
COUNTS = {False: 6000, True: 1500}
SLOW = 1000
SLOW_SECONDS = {False: 20.0, True: 10.0}
WORKERS = (1, 2)


def _load(port: int, count: int) -> dict[str, Any]:
    """Requests on new connections, 16 in flight, through the load generator's process."""
    spec = Spec("127.0.0.1", port, "list", CONCURRENCY, count, count // 10, "http://x", 0)
    return run_client("bench.loadgen", asdict(spec), spec.deadline + 60)


def _probe(url: str) -> float:
    """Seconds GET url took (10 s when it failed)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            response.read()
    except OSError:
        return 10.0
    return time.monotonic() - started


def _slow_clients(port_a: int, port_b: int, seconds: float) -> tuple[list[float], dict[str, int]]:
    """Probe B while SLOW clients trickle a header into A: probe times, the attack's counts."""
    attack = subprocess.Popen(
        [sys.executable, "-m", "tests.slowloris", str(port_a), "GET / HTTP/1.1", str(SLOW),
         str(seconds)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    probes: list[float] = []
    try:
        time.sleep(2.0)  # the attack's connections are open
        while attack.poll() is None:
            probes.append(_probe(f"http://127.0.0.1:{port_b}/"))
            time.sleep(0.1)
    finally:
        if attack.poll() is None:
            attack.kill()
    out, _ = attack.communicate(timeout=30)
    counts: dict[str, int] = json.loads(out or b"{}")
    return probes, counts


def _measure(workers: int, quick: bool, section: Section) -> None:
    port_a, port_b = free_port(), free_port()
    server = subprocess.Popen(
        [python(), "-m", "bench.dep_bare", "--port", str(port_a), "--port-b", str(port_b),
         "--workers", str(workers)],
        env=child_env({}),
        cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _probe(f"http://127.0.0.1:{port_b}/") >= 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        cpu = tree_cpu_seconds(server.pid)
        result = _load(port_a, COUNTS[quick])
        cpu = (tree_cpu_seconds(server.pid) - cpu) / max(1, result["sent"])
        latencies = result["latencies"]
        rate = len(latencies) / result["wall"] if result["wall"] else 0.0
        probes, counts = _slow_clients(port_a, port_b, SLOW_SECONDS[quick])
    finally:
        stop_process(server)
    answered = sum(1 for took in probes if took < 10)
    slowest = max(probes, default=float("nan"))
    section.rows.append(
        Row(
            f"front, {workers} worker{'s' if workers > 1 else ''}: new connection per request",
            f"{rate:,.0f} req/s, p99 {ms(percentile(latencies, 99))}, "
            f"{cpu * 1000:.2f} ms CPU/request",
            "event loop + h11 (before): 511–593 req/s (1 process), 604–645 (2 workers)",
            "informational",
            None,
        )
    )
    section.rows.append(
        Row(
            f"front, {workers} worker{'s' if workers > 1 else ''}: {SLOW:,} slow clients on A",
            f"B answered {answered} of {len(probes)}, slowest {ms(slowest)}; "
            f"{counts.get('peak', 0)} held, {counts.get('cut', 0)} cut",
            "event loop + h11 (before): 88 of 88, slowest 660 ms (1); 74 of 74, 1.5 s (2)",
            "every probe within 1 s",
            answered == len(probes) and slowest < 1.0,
        )
    )
    section.details.append(
        f"{workers} worker(s): statuses {result['statuses']}, "
        f"{result['error_count']} connection errors; attack {counts}"
    )


def run(quick: bool) -> Section:
    """Throughput and slow clients of the front at 1 and 2 workers."""
    section = Section("The HTTP front (granian)")
    for workers in WORKERS:
        _measure(workers, quick, section)
    return section
