"""Resident memory of `mdmbot serve --http` while one client pipelines requests and never reads.

The client sends `GET /metrics` (the largest answer the server gives without credentials, about
2 KB) back to back on one connection as fast as the server takes them, with a 4 KB receive
buffer, and reads none of the answers, connecting again whenever the server closes it; meanwhile
another client asks `/metrics` of the same listener and `/healthz` of the Slack one on new
connections every half second. The server's VmRSS (every process of it) is sampled each second.
A front that kept answering into its write buffer grew from 102 to 889 MB in 30 s. Then the same
with many such clients at once.
"""

from __future__ import annotations

import select
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.ack import start_mdmbot
from bench.common import (
    Row,
    Section,
    children,
    free_port,
    http_get,
    ms,
    rss_kib,
    stop_process,
    wait_healthy,
)
from bench.fake import start_fake

TARGET_BYTES = 200_000_000
SECONDS = {False: 60.0, True: 20.0}
MANY = 200  # non-reading pipelining clients at once in the second measure
MANY_SECONDS = {False: 20.0, True: 10.0}
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
BATCH = REQUEST * 256


class Flood:
    """One connection pipelining requests until stopped, never reading an answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0  # bytes the server's kernel took
        self.drops = 0  # connections the server dropped (each followed by a new one)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pipeline-flood", daemon=True)

    def start(self) -> Flood:
        """Connect and start sending."""
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop sending and close the connection."""
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._send()
            except OSError:  # the server dropped it: connect again, as an attacker would
                self.drops += 1
                self.stop.wait(0.1)

    def _send(self) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
            sock.settimeout(5)
            sock.connect(("127.0.0.1", self.port))
            sock.setblocking(False)
            pending = b""
            while not self.stop.is_set():
                pending = pending or BATCH
                _, writable, _ = select.select([], [sock], [], 0.2)
                if not writable:
                    continue  # the server stopped reading: it holds what it has
                try:
                    taken = sock.send(pending)
                except BlockingIOError:
                    continue
                self.sent += taken
                pending = pending[taken:]


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and every process under it (granian servers and workers), in KiB."""
    total = rss_kib(pid)[0]
    for child in children(pid):
        try:
            total += rss_kib(child)[0]
        except OSError:
            continue
    return total


def worker_of(url: str) -> int:
    """The worker process that answers GET url (its `x-mdmbot-worker` header)."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return int(response.headers["X-Mdmbot-Worker"])


def measure(ports: tuple[int, int], pid: int, seconds: float, clients: int) -> dict[str, float]:
    """Flood `clients` connections to the metrics port (`ports`: Slack's, metrics') for
    `seconds`; RSS (every process, and the flooded worker's) before and at its peak, probes
    answered and the slowest."""
    before = tree_rss_kib(pid)
    worker = worker_of(f"http://127.0.0.1:{ports[1]}/metrics")
    worker_before = worker_peak = rss_kib(worker)[0]
    floods = [Flood(ports[1]).start() for _ in range(clients)]
    probes_urls = [f"http://127.0.0.1:{ports[1]}/metrics", f"http://127.0.0.1:{ports[0]}/healthz"]
    peak, probes, failed, slowest = before, 0, 0, 0.0
    half, halfway = time.monotonic() + seconds / 2, 0
    ends = time.monotonic() + seconds
    next_sample = time.monotonic()
    try:
        while time.monotonic() < ends:
            for url in probes_urls:
                started = time.monotonic()
                status = http_get(url, timeout=5.0)
                slowest = max(slowest, time.monotonic() - started)
                probes += 1
                failed += status != 200
            if time.monotonic() >= next_sample:
                peak = max(peak, tree_rss_kib(pid))
                worker_peak = max(worker_peak, rss_kib(worker)[0])
                next_sample += 1.0
            if not halfway and time.monotonic() >= half:
                halfway = tree_rss_kib(pid)
            time.sleep(0.5)
        last = tree_rss_kib(pid)
        peak = max(peak, last)
    finally:
        for flood in floods:
            flood.stop.set()
        for flood in floods:
            flood.close()
    return {
        "before": before * 1024,
        "peak": peak * 1024,
        "worker_before": worker_before * 1024,
        "worker_peak": worker_peak * 1024,
        "second_half": (last - halfway) * 1024,
        "sent": sum(flood.sent for flood in floods),
        "drops": sum(flood.drops for flood in floods),
        "probes": probes,
        "failed": failed,
        "slowest": slowest,
    }


def run(quick: bool) -> Section:
    """Measure serve's RSS under one non-reading pipelining client."""
    section = Section("A client that pipelines and never reads")
    seconds = SECONDS[quick]
    fake = start_fake()
    try:
        with tempfile.TemporaryDirectory(prefix="mdmbot-bench-pipeline-") as tmp:
            ports = (free_port(), free_port())
            process = start_mdmbot(fake, Path(tmp), ports[0], 1, "--metrics-port", str(ports[1]))
            try:
                wait_healthy(f"http://127.0.0.1:{ports[0]}/healthz", process)
                time.sleep(1.0)
                result = measure(ports, process.pid, seconds, 1)
                many = measure(ports, process.pid, MANY_SECONDS[quick], MANY)
            finally:
                stop_process(process)
    finally:
        fake.stop()
    answered = result["failed"] == 0
    section.rows.append(
        Row(
            f"`mdmbot serve --http` VmRSS after {seconds:.0f} s of a non-reading pipelining client",
            f"the flooded worker {result['worker_peak'] / 1e6:.1f} MB at its peak (from "
            f"{result['worker_before'] / 1e6:.1f} MB); all its processes "
            f"{result['peak'] / 1e6:.1f} MB (from {result['before'] / 1e6:.1f} MB; "
            f"{result['second_half'] / 1e6:+.1f} MB in the last {seconds / 2:.0f} s)",
            f"every other client answered: {int(result['probes'] - result['failed'])} of "
            f"{int(result['probes'])} probes, slowest {ms(result['slowest'])}",
            "the flooded worker < 200 MB, every probe answered",
            result["worker_peak"] < TARGET_BYTES and answered,
        )
    )
    section.rows.append(
        Row(
            f"the same, {MANY} such clients at once for {MANY_SECONDS[quick]:.0f} s",
            f"{many['peak'] / 1e6:.1f} MB at its peak ("
            f"{(many['peak'] - many['before']) / MANY / 1e3:.0f} KB a client)",
            f"{int(many['probes'] - many['failed'])} of {int(many['probes'])} probes answered, "
            f"slowest {ms(many['slowest'])}",
            "—",
            None,
        )
    )
    section.details.append(
        f"the client pushed {result['sent'] / 1e6:.1f} MB of pipelined `GET /metrics` into the "
        f"server's socket in {seconds:.0f} s and read none of the answers (granian reads the next "
        f"request once the previous answer is written); the server closed its connection "
        f"{int(result['drops'])} times and it connected again each time; "
        f"{MANY} clients: {many['sent'] / 1e6:.1f} MB pushed, {int(many['drops'])} closes"
    )
    return section


if __name__ == "__main__":
    from bench.run import main

    raise SystemExit(main(["--only", "pipeline", "--no-write"]))
