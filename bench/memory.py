"""Resident memory of an idle `mdmbot serve --http --no-scheduler`, against bare baselines.

Each process is started fresh, waited for (GET /healthz answers 200, or it prints "ready"),
left idle for a moment, and its memory read from /proc: a server is a process tree (each
listener's granian server and workers, forked from one process), so its figure is the
proportional set size of every process of it (a page shared by n processes counts 1/n in each;
VmRSS would count it n times). Baselines: the interpreter alone, `import slack_bolt`, and the
bare bolt app served by the same HTTP front.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from bench.ack import start_bare, start_mdmbot
from bench.common import (
    Row,
    Section,
    child_env,
    children,
    free_port,
    python,
    rss_kib,
    stop_process,
    wait_healthy,
)
from bench.fake import start_fake

TARGET_BYTES = 150_000_000
SETTLE_SECONDS = 2.0
READY = "import sys; {imports}sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"


def mib(kib: int) -> str:
    """KiB as MiB and MB for the table."""
    return f"{kib / 1024:.1f} MiB ({kib * 1024 / 1e6:.1f} MB)"


def idle_python(imports: str) -> int:
    """VmRSS (KiB) of a Python that ran `imports` and then waits."""
    process = subprocess.Popen(
        [python(), "-c", READY.format(imports=imports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env({}),
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{imports!r} did not start")
        time.sleep(SETTLE_SECONDS)
        return rss_kib(process.pid)[0]
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB, from /proc/PID/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def idle_server(kind: str) -> tuple[int, int, float]:
    """(PSS KiB of every process, how many processes, start-up seconds) of an idle server."""
    fake = start_fake()
    try:
        with tempfile.TemporaryDirectory(prefix="mdmbot-bench-mem-") as tmp:
            port = free_port()
            starter = start_mdmbot if kind == "mdmbot" else start_bare
            process = starter(fake, Path(tmp), port)
            try:
                started = wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
                time.sleep(SETTLE_SECONDS)
                tree = [process.pid, *children(process.pid)]
                pss = sum(pss_kib(pid) for pid in tree)
            finally:
                stop_process(process)
            return pss, len(tree), started
    finally:
        fake.stop()


def run(quick: bool) -> Section:
    """Measure idle resident memory."""
    section = Section("Resident memory (idle)")
    interpreter = idle_python("")
    bolt = idle_python("import slack_bolt; ")
    bolt_front = idle_python("import slack_bolt, granian.server; ")
    bare, _, _ = idle_server("bare")
    mdmbot, processes, started = idle_server("mdmbot")
    section.rows.append(
        Row(
            "idle `mdmbot serve --http --no-scheduler` (PSS of its processes after /healthz)",
            f"{mib(mdmbot)} in {processes} processes",
            f"`import slack_bolt, granian.server`: {mib(bolt_front)}; bare bolt app served: "
            f"{mib(bare)}",
            "< 150 MB",
            mdmbot * 1024 < TARGET_BYTES,
        )
    )
    section.details.append(
        f"python alone {mib(interpreter)}; `import slack_bolt` {mib(bolt)}; "
        f"`import slack_bolt, granian.server` {mib(bolt_front)}; bare bolt app on mdmbot's "
        f"front {mib(bare)}; mdmbot serve {mib(mdmbot)} in {processes} processes, healthy "
        f"{started:.1f} s after start (migrations of a fresh SQLite database included)"
    )
    return section
