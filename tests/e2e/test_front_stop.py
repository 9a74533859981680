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


@pytest.mark.parametrize("where", ["loop", "pool"])
def test_a_request_in_the_app_at_sigterm_is_answered_before_the_server_stops(where: str) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), where], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert answer(ask(port, "/up")).endswith(b"done /up")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", SERVER, str(free_port()), "loop", str(marker)]
    server = subprocess.Popen(command, env=env)
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
