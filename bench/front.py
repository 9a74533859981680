"""The HTTP front alone: a constant-JSON WSGI app on two listeners, then slow clients on one.

`bench.dep_bare --port A --port-b B --workers W` (the front `mdmbot serve --http` runs) answers
16 clients in flight, each request on a new connection (`bench.loadgen`); then 1,000 clients
trickle a header into A (`tests/slowloris.py`, a line every 2 s, reconnecting when cut) while
B is asked every 0.1 s. The front before granian (the event loop and h11 of `bot/http/`, and
gunicorn's workers, up to issue 35) is measured the same way in the same run, alternating, when
`MDMBOT_BENCH_OLD_FRONT` names a checkout of its last commit with its two packages installed:

    git worktree add /tmp/old-front 918842c && pip install 'h11>=0.16,<0.17' 'gunicorn>=27,<28'
    MDMBOT_BENCH_OLD_FRONT=/tmp/old-front python -m bench.run --only front
"""

from __future__ import annotations

import json
import os
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
OLD_FRONT = "MDMBOT_BENCH_OLD_FRONT"
# The same constant-JSON app on both listeners, served as that checkout's `bench.dep_bare` does.
OLD_SERVER = """
import sys
from bench.dep_bare import THREADS, constant_json
from bot.http import HttpServer, Listener, WorkerHooks, serve_workers
a, b, workers = map(int, sys.argv[1:4])
listeners = [Listener(n, "127.0.0.1", p, constant_json) for n, p in (("A", a), ("B", b))]
if workers > 1:
    hooks = WorkerHooks(start=lambda: None, stop=lambda: None)
    raise SystemExit(serve_workers(listeners, workers, THREADS[2], hooks))
HttpServer(listeners, THREADS[1]).serve_forever()
"""
BEFORE_RATE = "event loop + h11 (before): 511–593 req/s (1 process), 604–645 (2 workers)"
BEFORE_SLOW = "event loop + h11 (before): 88 of 88, slowest 660 ms (1); 74 of 74, 1.5 s (2)"


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


def _server(old: str | None, port_a: int, port_b: int, workers: int) -> subprocess.Popen[bytes]:
    """The constant-JSON app on A and B: granian now, or the old front from its checkout."""
    if old is None:
        command = ["-m", "bench.dep_bare", "--port", str(port_a), "--port-b", str(port_b)]
        return subprocess.Popen(
            [python(), *command, "--workers", str(workers)], env=child_env({}), cwd=ROOT
        )
    env = child_env({})
    env["PYTHONPATH"] = old
    command = ["-c", OLD_SERVER, str(port_a), str(port_b), str(workers)]
    return subprocess.Popen([python(), *command], env=env, cwd=old)


def _measure(workers: int, quick: bool, old: str | None = None) -> dict[str, Any]:
    """Throughput on new connections, then slow clients on A while B is probed."""
    port_a, port_b = free_port(), free_port()
    server = _server(old, port_a, port_b, workers)
    try:
        deadline = time.monotonic() + 30
        while _probe(f"http://127.0.0.1:{port_b}/") >= 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        cpu = tree_cpu_seconds(server.pid)
        result = _load(port_a, COUNTS[quick])
        cpu = (tree_cpu_seconds(server.pid) - cpu) / max(1, result["sent"])
        probes, counts = _slow_clients(port_a, port_b, SLOW_SECONDS[quick])
    finally:
        stop_process(server)
    latencies = result["latencies"]
    return {
        "rate": len(latencies) / result["wall"] if result["wall"] else 0.0,
        "p99": percentile(latencies, 99),
        "cpu": cpu,
        "answered": sum(1 for took in probes if took < 10),
        "probes": len(probes),
        "slowest": max(probes, default=float("nan")),
        "counts": counts,
        "statuses": result["statuses"],
        "errors": result["error_count"],
    }


def _rate(m: dict[str, Any]) -> str:
    return f"{m['rate']:,.0f} req/s, p99 {ms(m['p99'])}, {m['cpu'] * 1000:.2f} ms CPU/request"


def _slow(m: dict[str, Any]) -> str:
    return f"B answered {m['answered']} of {m['probes']}, slowest {ms(m['slowest'])}"


def _report(
    workers: int, new: dict[str, Any], old: dict[str, Any] | None, section: Section
) -> None:
    """Rows for one worker count: granian, with the old front of the same run as its baseline."""
    name = f"front, {workers} worker{'s' if workers > 1 else ''}"
    counts = new["counts"]
    section.rows.append(
        Row(
            f"{name}: new connection per request",
            _rate(new),
            f"event loop + h11, this run: {_rate(old)}" if old else BEFORE_RATE,
            "informational",
            None,
        )
    )
    section.rows.append(
        Row(
            f"{name}: {SLOW:,} slow clients on A",
            f"{_slow(new)}; {counts.get('peak', 0)} held, {counts.get('cut', 0)} cut",
            f"event loop + h11, this run: {_slow(old)}" if old else BEFORE_SLOW,
            "every probe within 1 s",
            new["answered"] == new["probes"] and new["slowest"] < 1.0,
        )
    )
    for label, m in (("granian", new), ("event loop + h11", old)):
        if m is not None:
            section.details.append(
                f"{label}, {workers} worker(s): statuses {m['statuses']}, {m['errors']} "
                f"connection errors; attack {m['counts']}"
            )


def run(quick: bool) -> Section:
    """Throughput and slow clients of the front at 1 and 2 workers."""
    section = Section("The HTTP front (granian)")
    old = os.environ.get(OLD_FRONT) or None
    for workers in WORKERS:
        before = _measure(workers, quick, old) if old else None
        _report(workers, _measure(workers, quick), before, section)
    if old:
        section.details.append(f"the old front ran from {old} (`{OLD_FRONT}`)")
    return section
