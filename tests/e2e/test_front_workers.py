"""A listener's backlog across its two worker processes: one limit, and the older request first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER = textwrap.dedent(
    """
    import os, sys, time
    from bot.http import Listener, WorkerHooks, serve_processes
    from bot.http.backlog import Backlog

    released = sys.argv[2]
    backlog = Backlog(limit=1, threads=4, name="workers-test", lapse=60.0)

    def hold(name):  # a job that runs until the test creates the file of its name
        while not os.path.exists(os.path.join(released, name)):
            time.sleep(0.01)

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path.startswith("/hold/"):
            backlog.submit(hold, path[6:])
        headers = [("content-type", "text/plain"), ("content-length", str(len(path)))]
        start_response("200 OK", headers)
        return [path.encode()]

    listener = Listener("a", "127.0.0.1", int(sys.argv[1]), app, backlog=backlog,
                        on_loop=lambda _: True)
    raise SystemExit(serve_processes([listener], 2, 2, WorkerHooks(stop=lambda: None)))
    """
)


class Connection:
    """A kept-alive client connection, and the worker that holds it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.worker = self.get("/which")[0]

    def send(self, path: str) -> None:
        """Send a GET of `path`."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())

    def answer(self, timeout: float = 10.0) -> tuple[str, str]:
        """(worker, body) of the next answer; TimeoutError when none comes in `timeout`."""
        self.sock.settimeout(timeout)
        data = b""
        while True:
            head, complete, body = data.partition(b"\r\n\r\n")
            if complete:
                lines = [line.split(b": ", 1) for line in head.split(b"\r\n")[1:]]
                fields = {name.lower(): value for name, value in lines}
                if len(body) >= int(fields[b"content-length"]):
                    return fields[b"x-mdmbot-worker"].decode(), body.decode()
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            data += chunk

    def get(self, path: str) -> tuple[str, str]:
        """Send a GET of `path` and read its answer."""
        self.send(path)
        return self.answer()

    def silent_for(self, seconds: float) -> bool:
        """Whether no answer comes in `seconds`."""
        try:
            self.answer(seconds)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The server above with two workers, once both answer: (port, folder of released jobs)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", SERVER, str(port), str(tmp_path)]
    server = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield port, tmp_path
    finally:
        (tmp_path / "stop").touch()
        for name in ("one", "two", "three", "four", "five"):
            (tmp_path / name).touch()
        server.terminate()
        server.wait(30)


def two_on_each(port: int) -> tuple[list[Connection], list[Connection]]:
    """Two kept-alive connections held by each of the two workers."""
    held: dict[str, list[Connection]] = {}
    for _ in range(200):
        connection = Connection(port)
        held.setdefault(connection.worker, []).append(connection)
        if len(held) == 2 and all(len(each) >= 2 for each in held.values()):
            first, second = held.values()
            return first[:2], second[:2]
    raise AssertionError(f"the connections did not reach both workers: {list(held)}")


def at_the_limit(port: int) -> tuple[list[Connection], list[Connection]]:
    """Two connections on each worker, and the listener at its limit: two jobs held by the
    first worker (one from each of its connections)."""
    (a, b), others = two_on_each(port)
    assert a.get("/hold/one")[1] == "/hold/one"
    assert b.get("/hold/two")[1] == "/hold/two"  # the listener's limit is two jobs, in any worker
    return [a, b], others


def test_work_left_in_one_worker_holds_back_a_request_in_the_other(
    workers: tuple[int, Path],
) -> None:
    port, released = workers
    _, (c, _) = at_the_limit(port)
    c.send("/next")
    assert c.silent_for(0.5), "the other worker let a request in past the listener's limit"
    (released / "one").touch()
    worker, body = c.answer()
    assert (worker, body) == (c.worker, "/next")


def test_the_request_that_came_first_goes_first_whichever_worker_holds_it(
    workers: tuple[int, Path],
) -> None:
    port, released = workers
    (a, _), (c, d) = at_the_limit(port)
    c.send("/hold/three")  # held back: the listener is at its limit
    time.sleep(0.2)
    a.send("/later")  # held back too, in the first worker, which will have the room
    assert c.silent_for(0.3)
    (released / "one").touch()  # a job of the first worker ends
    assert c.answer() == (c.worker, "/hold/three")
    assert a.silent_for(0.5), "a later request went before an older one held by another worker"
    (released / "two").touch()
    assert a.answer() == (a.worker, "/later")
    assert d.get("/free")[1] == "/free"


def test_a_worker_that_dies_with_its_jobs_does_not_hold_the_other_back(
    workers: tuple[int, Path],
) -> None:
    port, _ = workers
    (a, _), (c, _) = at_the_limit(port)
    c.send("/next")
    assert c.silent_for(0.3)
    os.kill(int(a.worker), signal.SIGKILL)  # its slot still counts two jobs, until it is replaced
    started = time.monotonic()
    assert c.answer(20.0) == (c.worker, "/next")
    assert time.monotonic() - started < 15
    assert Connection(port).get("/after")[1] == "/after"
