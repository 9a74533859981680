"""Helpers shared by the benchmarks: results, percentiles, processes, signed Slack requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-0123456789ab"
BOT_TOKEN = "xoxb-bench-token"
SECRET_KEY = "bench-vault-key-" + "k" * 32
TEAM = "T0BENCH"
ADMIN = "UADMINBENCH"
ALERT_CHANNEL = "C0ALERTS"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    benchmark: str
    figure: str
    baseline: str
    target: str
    met: bool | None  # None: informational, no target


@dataclass
class Section:
    """What one benchmark reports: table rows and free-form detail lines."""

    title: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    """The median of values."""
    return percentile(values, 50)


def ms(seconds: float) -> str:
    """Seconds as milliseconds for the table."""
    return f"{seconds * 1000:.1f} ms"


def machine() -> dict[str, str]:
    """What the benchmarks ran on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus (nproc)": str(os.cpu_count() or "?"),
        "cpu model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": _loadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> int:
    """The HTTP status of GET url (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    """Wait until GET url answers 200; return how long that took."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if http_get(url, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live processes under `pid` (each listener's granian server and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found + [grandchild for child in found for grandchild in children(child)]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (a server's worker processes)."""
    total = cpu_seconds(pid)
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            continue
    return total


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a benchmark subprocess: ours, minus mdmbot/Slack settings, plus extra."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MDMBOT_", "SLACK_")) and key != "PORT"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM a process we started and wait for it (SIGKILL after timeout)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return int(process.returncode)


def python() -> str:
    """The interpreter running the benchmarks (the project's venv)."""
    return sys.executable


def run_client(module: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a load-generating `python -m module` in its own process: JSON spec in, JSON out."""
    done = subprocess.run(
        [python(), "-m", module],
        input=json.dumps(spec).encode(),
        capture_output=True,
        cwd=ROOT,
        env=child_env({}),
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slash_command_body(text: str, seq: int, response_root: str) -> bytes:
    """A `/mdm` slash command body shaped like Slack's (unique trigger id per seq, sent at)."""
    return urlencode(
        {
            "token": "deprecated",
            "team_id": TEAM,
            "team_domain": "school",
            "channel_id": "C0GENERAL",
            "channel_name": "general",
            "user_id": ADMIN,
            "user_name": "bench",
            "command": "/mdm",
            "text": text,
            "api_app_id": "A0MDMBOT",
            "is_enterprise_install": "false",
            "response_url": f"{response_root}commands/{TEAM}/{seq}/hook",
            "trigger_id": f"{seq}.{int(time.time() * 1000)}.benchtrigger",  # ms: modal lag
        }
    ).encode()


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema on the database at `base`, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
