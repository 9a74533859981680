"""Between granian and a listener's WSGI app: what the front refuses, the body deadline, threads.

granian (hyper) parses the request and refuses on its own a folded header line, two different
Content-Length values, a header over its read buffer (431) and a header not finished in time.
It has no deadline for a body, and its WSGI interface sends no answer while the app waits on a
body, so a listener is served through granian's RSGI interface: the body is awaited on the
worker's event loop under `Limits.body_seconds` (a slow client costs no thread, and is answered
408 and closed), and only then does the WSGI app run: on the event loop itself for the requests
the listener says wait on nothing slow (`Listener.on_loop`: no hand-off between threads, one at
a time, as a sync worker would), else on the listener's own thread pool. A request with
Transfer-Encoding is refused: hyper keeps it over a Content-Length next to it.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.http.backlog import Backlog
from bot.http.wsgi import Listener, WsgiApp

log = logging.getLogger("mdmbot.http")
WORKER_HEADER = "x-mdmbot-worker"
BACKLOG_POLL = 0.002  # how often a request held back by its listener's backlog looks again
Answer = tuple[int, list[tuple[str, str]], bytes]
CLOSE = [("content-type", "text/plain"), ("content-length", "0"), ("connection", "close")]


class Guard:
    """One listener's WSGI app as an RSGI application granian serves."""

    def __init__(self, listener: Listener, threads: int) -> None:
        self.app: WsgiApp = listener.app
        self.limits = listener.limits
        self.backlog = listener.backlog
        self.on_loop = listener.on_loop
        self.waiting: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()
        self.letting: asyncio.Task[None] | None = None
        self.slot = 0  # this worker's place among the listener's (from 0)
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None  # made in the process that serves
        self.on_start: Callable[[], None] = lambda: None  # once granian handles the signals
        self.worker = ""
        self.base: dict[str, Any] = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker starts: the app's threads and the name of the worker in every answer."""
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="http")
        self.worker = str(os.getpid())
        if self.backlog is not None:
            self.backlog.join(self.slot)
        self.on_start()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker stops: finish the requests in the app."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        """Refuse, or await the whole body in time, then answer from the WSGI app."""
        headers = scope.headers
        # RFC 9112 6.1: Transfer-Encoding with Content-Length may be request smuggling.
        if "transfer-encoding" in headers:
            return self._refuse(proto, 400)
        declared = headers.get("content-length") or "0"
        if not (declared.isascii() and declared.isdigit()):
            return self._refuse(proto, 400)
        length = int(declared)
        if length > self.limits.max_body:
            return self._refuse(proto, 413)
        body = b""
        if length:
            try:
                body = await asyncio.wait_for(proto(), self.limits.body_seconds)
            except TimeoutError:
                return self._refuse(proto, 408)
            if len(body) != length:
                return self._refuse(proto, 400)
        environ = self._environ(scope, body)
        await self._wait_for_backlog()
        if self.on_loop(environ):
            status, named, out = call_app(self.app, environ)
        else:
            loop = asyncio.get_running_loop()
            status, named, out = await loop.run_in_executor(self.pool, call_app, self.app, environ)
        named.append((WORKER_HEADER, self.worker))
        proto.response_bytes(status, named, out)

    def _refuse(self, proto: Any, status: int) -> None:
        """An empty answer that closes the connection (what follows on it is not read)."""
        proto.response_bytes(status, [*CLOSE, (WORKER_HEADER, self.worker)], b"")

    def _environ(self, scope: Any, body: bytes) -> dict[str, Any]:
        """The WSGI environ of a request whose body is in."""
        server, _, server_port = scope.server.rpartition(":")
        client, _, client_port = scope.client.rpartition(":")
        environ = dict(self.base)
        environ.update(
            REQUEST_METHOD=scope.method,
            PATH_INFO=scope.path.encode("utf-8").decode("latin-1"),
            QUERY_STRING=scope.query_string,
            SERVER_NAME=server.strip("[]"),
            SERVER_PORT=server_port,
            SERVER_PROTOCOL=f"HTTP/{scope.http_version}",
            REMOTE_ADDR=client.strip("[]"),
            REMOTE_PORT=client_port,
            CONTENT_LENGTH=str(len(body)),
        )
        environ["wsgi.input"] = io.BytesIO(body)
        for name, value in scope.headers.items():
            if "_" in name:  # X_Forwarded_For would pass for X-Forwarded-For (CGI naming)
                continue
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    async def _wait_for_backlog(self) -> None:
        """While the work queued behind earlier answers is at its limit, the next request waits
        its turn: acks and the work after them slow down together, first come first served (a
        lapsed job does not count), and across the listener's workers within `backlog.SLACK`."""
        backlog = self.backlog
        if backlog is None:
            return
        now = time.monotonic()
        if not self.waiting and not backlog.full() and not backlog.older_elsewhere(now):
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.waiting:
            backlog.waiting_since(now)
        self.waiting.append((now, turn))
        if self.letting is None or self.letting.done():
            self.letting = asyncio.create_task(self._let_in(backlog))  # held: tasks are weak
        await turn

    async def _let_in(self, backlog: Backlog) -> None:
        """Let the waiting requests in, oldest first, as the backlog has room for each and no
        other worker holds one back that came `backlog.SLACK` before it."""
        while self.waiting:
            arrived, turn = self.waiting[0]
            if not turn.done() and (backlog.full() or backlog.older_elsewhere(arrived)):
                backlog.waiting_since(arrived)  # written afresh: this worker is still here
                await asyncio.sleep(BACKLOG_POLL)
                continue
            self.waiting.popleft()
            backlog.waiting_since(self.waiting[0][0] if self.waiting else math.inf)
            if not turn.done():  # else its request was cancelled
                turn.set_result(None)
                await asyncio.sleep(0)  # its request runs (and queues its work) before the next


def call_app(app: WsgiApp, environ: dict[str, Any]) -> Answer:
    """Run one WSGI request to the end (status, headers, whole body); a failure answers 500."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    try:
        result: Iterable[bytes] = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        log.exception("request failed")
        return 500, [("content-type", "text/plain")], b""
    if not started:
        log.error("the application answered without a status")
        return 500, [("content-type", "text/plain")], b""
    return int(str(started[0]).split(" ", 1)[0]), list(started[1]), b"".join(chunks)
