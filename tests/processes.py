"""Start real `mdmbot` processes (`serve` over HTTP or Socket Mode) for tests; wait for them."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakeslack import FakeSlack
from tests.slack_harness import SIGNING_SECRET


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (Linux's default if unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


EPHEMERAL = _ephemeral_ports()


def free_port() -> int:
    """A port nobody listens on right now, below the range the kernel gives outgoing
    connections: a port from that range may become a client's local port (the load of a
    parallel test) before the process it was picked for binds it."""
    while True:
        port = random.randrange(10000, EPHEMERAL.start)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def mdmbot_command() -> list[str]:
    """The installed console script (or the module when running from a checkout)."""
    script = Path(sys.executable).parent / "mdmbot"
    if script.exists():
        return [str(script)]
    found = shutil.which("mdmbot")
    return [found] if found else [sys.executable, "-m", "bot.cli"]


class _Zygote:
    """This test process's warm `mdmbot` (tests/cli_zygote.py), started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.path = ""
        self.proc: subprocess.Popen[str] | None = None

    def socket_path(self) -> str:
        """The socket of a running zygote, started if needed."""
        with self.lock:
            if self.pid != os.getpid() or self.proc is None or self.proc.poll() is not None:
                self._start()
            return self.path

    def _start(self) -> None:
        self.path = str(Path(tempfile.mkdtemp(prefix="mdmbot-zygote-")) / "socket")
        script = Path(__file__).with_name("cli_zygote.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MDMBOT_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(script), self.path],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        self.pid = os.getpid()
        atexit.register(self._stop, self.proc, Path(self.path).parent)

    @staticmethod
    def _stop(proc: subprocess.Popen[str], directory: Path) -> None:
        proc.kill()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


_ZYGOTE = _Zygote()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_cli(
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path | str | None = None,
    input: str | None = None,
    stdin: int | None = None,
    timeout: float = 60,
    universal_newlines: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([mdmbot, *args], capture_output=True, text=True)`, forked from a warm
    `mdmbot` (tests/cli_zygote.py) instead of starting an interpreter: a process of its own
    with these stdio, environment, directory and umask. stdin is `input`, or the descriptor
    `stdin` (a terminal), or empty. Output is text with universal newlines as `text=True`
    gives, or as written without `universal_newlines`."""
    from tests.cli_zygote import pass_fds

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    request = {"argv": list(args), "env": env, "cwd": str(cwd or os.getcwd()), "umask": _umask()}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_ZYGOTE.socket_path())
        given = in_r if stdin is None else stdin
        pass_fds(conn, json.dumps(request).encode(), [given, out_w, err_w])
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    feeder = threading.Thread(target=_feed, args=(in_w, (input or "").encode()), daemon=True)
    feeder.start()
    found: dict[int, bytes] = {}
    readers = [
        threading.Thread(target=_drain, args=(fd, found), daemon=True) for fd in (out_r, err_r)
    ]
    for reader in readers:
        reader.start()
    conn.settimeout(timeout)
    replies = conn.makefile("r")
    pid = int(replies.readline() or 0)
    try:
        status = replies.readline()
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        raise subprocess.TimeoutExpired(args, timeout) from None
    finally:
        conn.close()
    for reader in readers:
        reader.join(timeout)
    assert status, f"mdmbot {' '.join(args)} died without an exit status"
    stdout, stderr = (found[fd].decode() for fd in (out_r, err_r))
    if universal_newlines:
        stdout, stderr = _universal(stdout), _universal(stderr)
    return subprocess.CompletedProcess(["mdmbot", *args], int(status), stdout, stderr)


def _feed(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _drain(fd: int, found: dict[int, bytes]) -> None:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    found[fd] = b"".join(chunks)


def _universal(text: str) -> str:
    """What `text=True` gives: universal newlines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def bot_env(
    fake: FakeSlack, data_dir: Path, database_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a bot process wired to the fake Slack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MDMBOT_"))}
    env.update(
        {
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "MDMBOT_DATA_DIR": str(data_dir),
            "MDMBOT_ALERT_CHANNEL": "C0ALERTS",
            "MDMBOT_SECRET_KEY": "k" * 40,
            # Any free port: the default 9464 would be shared by parallel test workers.
            "MDMBOT_METRICS_PORT": "0",
        }
    )
    if database_url:
        env["MDMBOT_DATABASE_URL"] = database_url
    env.update(extra)
    return env


class BotProcess:
    """One `mdmbot …` process, stdout and stderr captured in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*mdmbot_command(), *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll `condition` until true; fail (with the log) on timeout or if the process exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"mdmbot exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class ServeProcess(BotProcess):
    """One `mdmbot serve --http` process."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        super().__init__(
            env,
            log_path,
            "serve",
            "--http",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *args,
        )

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until /healthz answers; return its report."""
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mdmbot exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    return dict(json.loads(response.read()))
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mdmbot did not become ready:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        """The current /healthz report."""
        import json

        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))

    def metrics(self) -> str:
        """The Prometheus text of the metrics listener."""
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, sample: str) -> float:
        """The value of one sample line (name with labels), 0 when absent."""
        for line in self.metrics().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
