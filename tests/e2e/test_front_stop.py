"""SIGTERM while a request is in the app: it is answered in full, then the server stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER = textwrap.dedent(
    """
    import sys, time
    from bot.http import Listener, WorkerHooks, serve_processes

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/wait":
            time.sleep(1.5)
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"done " + environ["PATH_INFO"].encode()]

    def starting():  # a worker slow to start: it says so, then takes 2 s
        if len(sys.argv) > 3:
            open(sys.argv[3], "w").close()
            time.sleep(2.0)

    on_loop = sys.argv[2] == "loop"
    listener = Listener("a", "127.0.0.1", int(sys.argv[1]), app, on_loop=lambda _: on_loop)
    hooks = WorkerHooks(stop=lambda: None, after_fork=starting)
    raise SystemExit(serve_processes([listener], 1, 2, hooks))
    """
)


def ask(port: int, path: str) -> socket.socket:
    """A connection with one request sent on it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything until the server closes."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def start(port: int, where: str, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """The server above on `port` (its output into `log`, when given)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = log.open("wb") if log else None
    command = [sys.executable, "-c", SERVER, str(port), where, *extra]
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def serving(port: int, where: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """The server above on `port`, once it answers."""
    server = start(port, where, log=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert answer(ask(port, "/up")).endswith(b"done /up")
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError("the server did not answer") from None
            time.sleep(0.1)


@pytest.mark.parametrize("where", ["loop", "pool"])
def test_a_request_in_the_app_at_sigterm_is_answered_before_the_server_stops(where: str) -> None:
    port = free_port()
    server = serving(port, where)
    try:
        waiting = ask(port, "/wait")
        time.sleep(0.5)  # the request is in the app, which takes 1.5 s
        server.send_signal(signal.SIGTERM)
        reply = answer(waiting)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"done /wait")
        assert server.wait(timeout=30) == 0
        with pytest.raises(OSError):
            ask(port, "/after")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_sigterm_while_a_worker_starts_stops_it_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "starting"
    server = start(free_port(), "loop", str(marker))
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)  # the worker has granian's server's handlers still
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - started < 10, "the worker was killed after its 20 s, not stopped"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _descendants(pid: int) -> set[int]:
    """The live processes under `pid`: its children, theirs, and so on."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: set[int] = set()
    while more := {child for child, parent in parents.items() if parent in found | {pid}} - found:
        found |= more
    return found


def _listener_server(serve: int) -> int:
    """The granian server `serve` forked for its one listener."""
    (pid,) = _descendants(serve) - set().union(*map(_descendants, _descendants(serve)))
    return pid


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _still_running(pids: set[int], seconds: float = 15) -> list[int]:
    """Those of `pids` still running after up to `seconds` of waiting for them all to end."""
    deadline = time.monotonic() + seconds
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if _running(pid)]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("killed", ["serve", "listener"])
def test_a_server_killed_with_sigkill_leaves_nothing_serving_its_port(killed: str) -> None:
    """The OOM killer or `kill -9` ends the process you started (or a listener's granian
    server): what it forked ends too, instead of serving the port on its own."""
    port = free_port()
    server = serving(port, "loop")
    left: set[int] = set()
    try:
        left = _descendants(server.pid)
        assert len(left) >= 2, "a listener's server and its worker"
        if killed == "serve":
            server.kill()
        else:
            os.kill(_listener_server(server.pid), signal.SIGKILL)
        assert server.wait(timeout=30) != 0
        assert not _still_running(left), "still running after the kill"
        with pytest.raises(OSError):
            ask(port, "/after")
    finally:
        for pid in left:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signalled", ["serve", "listener"])
def test_signals_arriving_while_one_is_handled_still_stop_everything(
    signalled: str, tmp_path: Path
) -> None:
    """SIGTERM after SIGTERM for 0.3 s (systemd signals every process of the service, serve its
    servers, Linux a child whose parent died): every process ends, with no traceback."""
    log = tmp_path / "serve.log"
    server = serving(free_port(), "loop", log)
    left = _descendants(server.pid)
    try:
        target = server.pid if signalled == "serve" else _listener_server(server.pid)
        ends = time.monotonic() + 0.3
        while time.monotonic() < ends:
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.00005)
        server.wait(timeout=30)
        assert not _still_running(left), log.read_text()
        assert "Error" not in log.read_text(), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pid in left:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
