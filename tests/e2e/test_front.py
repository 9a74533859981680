"""The HTTP front (granian) on real sockets: deadlines, per-listener isolation, refusals."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from bot.http import HttpServer, Limits, Listener, StartResponse
from bot.http.backlog import Backlog


def echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answers the method, path, query and body it was sent."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("content-type", "text/plain")])
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} "
    return [text.encode() + body]


LIMITS = Limits(header_seconds=0.5, body_seconds=0.5, max_body=1000)


@pytest.fixture
def server() -> Iterator[HttpServer]:
    """Two listeners, each allowing half a second per header and body."""
    running = HttpServer(
        [Listener("a", "127.0.0.1", 0, echo, LIMITS), Listener("b", "127.0.0.1", 0, echo, LIMITS)],
        2,
    ).start_in_background("front-test")
    yield running
    running.close()


def connect(port: int) -> socket.socket:
    """A client socket with a 3 s read timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or 3 s pass)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def ask(port: int, request: bytes) -> bytes:
    """Send one request with Connection: close and read the whole answer."""
    with connect(port) as sock:
        sock.sendall(request)
        return read_all(sock)


def test_a_request_is_answered_with_its_path_query_and_body(server: HttpServer) -> None:
    answer = ask(
        server.ports["a"],
        b"POST /x%20y?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        b"body",
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-type: text/plain\r\n" in answer.lower()
    assert answer.endswith(b"POST /x y?q=1 body")


def test_keep_alive_answers_pipelined_requests_in_order(server: HttpServer) -> None:
    with connect(server.ports["a"]) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        answer = sock.recv(65536)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b"GET /one") < answer.index(b"GET /two")


def test_a_header_not_finished_in_time_is_cut(server: HttpServer) -> None:
    with connect(server.ports["a"]) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for line in range(3):  # still trickling when the deadline passes
            time.sleep(0.2)
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % line)
            except OSError:
                break
        assert read_all(sock) == b"", "closed without an answer (hyper's header_read_timeout)"
        assert time.monotonic() - started < 2


def test_a_body_not_finished_in_time_is_cut(server: HttpServer) -> None:
    with connect(server.ports["a"]) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf")
        assert read_all(sock).startswith(b"HTTP/1.1 408 Request Timeout")
        assert time.monotonic() - started < 2


def test_slow_bodies_hold_no_thread_of_the_app(server: HttpServer) -> None:
    uploads = [connect(server.ports["a"]) for _ in range(10)]  # more than its 2 threads
    try:
        for sock in uploads:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf")
        time.sleep(0.1)
        started = time.monotonic()
        answer = ask(
            server.ports["a"], b"GET /now HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert answer.endswith(b"GET /now? ")
        assert time.monotonic() - started < 0.4, "answered before the slow bodies' deadline"
    finally:
        for sock in uploads:
            sock.close()


def test_a_header_with_an_underscore_in_its_name_does_not_reach_the_app() -> None:
    def headers(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [environ.get("HTTP_X_FORWARDED_FOR", "none").encode()]

    server = HttpServer([Listener("a", "127.0.0.1", 0, headers)], 2).start_in_background("under")
    try:
        request = (
            b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert ask(server.ports["a"], request).endswith(b"none")
    finally:
        server.close()


def test_bad_requests_and_oversized_bodies_are_refused(server: HttpServer) -> None:
    port = server.ports["a"]
    assert ask(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    big = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n"
    assert ask(port, big).startswith(b"HTTP/1.1 413 Payload Too Large")


def test_hundreds_of_idle_connections_do_not_keep_a_new_one_out(server: HttpServer) -> None:
    port = server.ports["a"]
    idle = [connect(port) for _ in range(300)]
    try:
        for sock in idle[:150]:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        answer = ask(port, b"GET /new HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert answer.endswith(b"GET /new? ")
        assert time.monotonic() - started < 0.5
    finally:
        for sock in idle:
            sock.close()


def big(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answers 4 MB."""
    start_response("200 OK", [("content-type", "application/octet-stream")])
    return [b"x" * 4_000_000]


def test_a_client_reading_a_large_answer_slowly_gets_all_of_it() -> None:
    limits = Limits(header_seconds=0.5)
    server = HttpServer([Listener("a", "127.0.0.1", 0, big, limits)], 2)
    server.start_in_background("front-slow-reader")
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect(("127.0.0.1", server.ports["a"]))
            sock.settimeout(3)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            received = 0
            started = time.monotonic()
            while received < 4_000_000:
                chunk = sock.recv(200_000)
                assert chunk, f"dropped after {received:,} bytes"
                received += len(chunk)
                time.sleep(0.02)  # about 2 s for the whole answer, 4 times the header deadline
            assert time.monotonic() - started > 1.0
    finally:
        server.close()


def test_slow_clients_on_one_listener_leave_the_other_alone(server: HttpServer) -> None:
    slow = [connect(server.ports["a"]) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        answer = ask(server.ports["b"], b"GET /b HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        assert answer.endswith(b"GET /b? ")
        assert time.monotonic() - started < 0.5
    finally:
        for sock in slow:
            sock.close()


def test_clients_pipelining_back_to_back_do_not_keep_a_new_connection_out() -> None:
    server = HttpServer([Listener("a", "127.0.0.1", 0, echo, Limits())], 2)
    server.start_in_background("front-pipelining")
    port = server.ports["a"]
    stop = threading.Event()
    answered = [0]

    def pipeline() -> None:
        """Send 50 requests at once, read their answers, again; after a close, send the rest."""
        left = 50
        while not stop.is_set():
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 3) as sock,
            ):
                while not stop.is_set():
                    sock.sendall(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n" * left)
                    got = b""
                    while got.count(b"GET /p? ") < left:
                        try:
                            chunk = sock.recv(65536)
                        except OSError:
                            chunk = b""
                        if not chunk:
                            break
                        got += chunk
                    answered[0] += got.count(b"GET /p? ")
                    left -= got.count(b"GET /p? ")
                    if left:
                        break  # closed after a run of pipelined answers: connect again
                    left = 50

    clients = [threading.Thread(target=pipeline, daemon=True) for _ in range(8)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        slowest = 0.0
        for n in range(5):
            started = time.monotonic()
            request = f"GET /new{n} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            assert ask(port, request.encode()).endswith(f"GET /new{n}? ".encode())
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        assert answered[0] > 0
        assert slowest < 1.0, f"a new connection waited {slowest:.1f} s"
    finally:
        stop.set()
        for client in clients:
            client.join(5)
        server.close()


def sleepy(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Waits a second on `/wait` (as on a lock or on Slack), answers at once otherwise."""
    if environ["PATH_INFO"] == "/wait":
        time.sleep(1.0)
    start_response("200 OK", [("content-type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def test_a_request_waiting_on_io_or_a_silent_client_does_not_hold_up_the_next_one() -> None:
    server = HttpServer([Listener("a", "127.0.0.1", 0, sleepy)], 4)
    server.start_in_background("front-turns")
    port = server.ports["a"]
    silent = connect(port)
    waiting = connect(port)
    try:
        waiting.sendall(b"GET /wait HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        time.sleep(0.1)
        started = time.monotonic()
        answer = ask(port, b"GET /now HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert answer.endswith(b"/now")
        assert time.monotonic() - started < 0.5
        assert read_all(waiting).endswith(b"/wait")
    finally:
        silent.close()
        waiting.close()
        server.close()


def test_a_burst_of_connections_is_answered_in_full() -> None:
    server = HttpServer([Listener("a", "127.0.0.1", 0, echo)], 4)
    server.start_in_background("front-burst")
    port = server.ports["a"]
    clients = [connect(port) for _ in range(100)]
    try:
        for n, sock in enumerate(clients):
            sock.sendall(f"GET /{n} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        answers = [read_all(sock) for sock in clients]
        assert [a.endswith(f"GET /{n}? ".encode()) for n, a in enumerate(answers)] == [True] * 100
    finally:
        for sock in clients:
            sock.close()
        server.close()


@pytest.mark.parametrize("lapse", [10.0, 0.2])
def test_work_left_behind_an_answer_holds_back_the_next_request_until_done_or_lapsed(
    lapse: float,
) -> None:
    backlog = Backlog(limit=1, threads=2, name="front-backlog", lapse=lapse)
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/job":
            backlog.submit(release.wait, 5.0)
        start_response("200 OK", [("content-type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = HttpServer([Listener("a", "127.0.0.1", 0, app, Limits(), backlog)], 4)
    server.start_in_background("front-backlog")
    port = server.ports["a"]
    try:
        assert ask(port, b"GET /job HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").endswith(
            b"/job"
        )
        with connect(port) as sock:
            sock.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            sock.settimeout(0.1 if lapse > 1 else 2.0)
            started = time.monotonic()
            if lapse > 1:
                with pytest.raises(TimeoutError):  # the job still counts: nothing answered yet
                    sock.recv(65536)
                release.set()
                sock.settimeout(2.0)
            answer = read_all(sock)
            assert answer.endswith(b"/next")
            assert time.monotonic() - started < 1.0
        assert backlog.pending == (0 if lapse > 1 else 1)
    finally:
        release.set()
        backlog.shutdown()
        server.close()


def test_requests_on_the_loop_are_not_held_up_by_one_waiting_in_the_pool() -> None:
    threads: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        threads[environ["PATH_INFO"]] = threading.current_thread().name
        return sleepy(environ, start_response)

    def on_loop(environ: dict[str, Any]) -> bool:
        return bool(environ["PATH_INFO"] != "/wait")

    server = HttpServer([Listener("a", "127.0.0.1", 0, app, LIMITS, on_loop=on_loop)], 2)
    server.start_in_background("front-loop")
    port = server.ports["a"]
    waiting, slow_body = connect(port), connect(port)
    try:
        waiting.sendall(b"GET /wait HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        slow_body.sendall(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        time.sleep(0.1)
        started = time.monotonic()
        for n in range(20):
            answer = ask(
                port, f"GET /now{n} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.endswith(f"/now{n}".encode())
        assert time.monotonic() - started < 0.5
        assert read_all(waiting).endswith(b"/wait")
        assert read_all(slow_body).startswith(b"HTTP/1.1 408")
        assert threads["/wait"].startswith("http")
        assert {threads[f"/now{n}"] for n in range(20)} == {"front-loop-0"}
    finally:
        waiting.close()
        slow_body.close()
        server.close()


def test_requests_held_back_by_work_left_behind_go_in_the_order_they_came() -> None:
    backlog = Backlog(limit=1, threads=2, name="front-order", lapse=10.0)
    release = threading.Event()
    order: list[str] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        order.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/job":
            backlog.submit(release.wait, 5.0)
        start_response("200 OK", [("content-type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    listener = Listener("a", "127.0.0.1", 0, app, Limits(), backlog, on_loop=lambda _: True)
    server = HttpServer([listener], 2).start_in_background("front-order")
    port = server.ports["a"]
    clients: list[socket.socket] = []
    try:
        ask(port, b"GET /job HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        for n in range(8):
            sock = connect(port)
            sock.sendall(f"GET /{n} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
            clients.append(sock)
            time.sleep(0.05)
        assert order == ["/job"]
        release.set()
        assert [read_all(sock).endswith(f"/{n}".encode()) for n, sock in enumerate(clients)] == [
            True
        ] * 8
        assert order == ["/job", *(f"/{n}" for n in range(8))]
    finally:
        release.set()
        for sock in clients:
            sock.close()
        backlog.shutdown()
        server.close()
