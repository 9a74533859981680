"""The event-loop front: every listener holds its clients cheaply, with deadlines and limits.

A request reaches its WSGI app, on the listener's own thread pool, only once its header and body
are in: a slow or idle client costs a socket and a timer on the loop, never a thread, and each
listener counts its own connections, so clients of one port never starve another.
"""

from __future__ import annotations

import asyncio
import io
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

import h11

from bot.http.site import Site
from bot.http.wsgi import Listener

log = logging.getLogger("mdmbot.http")

Answer = tuple[str, list[tuple[str, str]], bytes]
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        except (ValueError, OSError):
            return soft
        return max(soft, target)
    return soft


def call_app(app: Any, environ: dict[str, Any]) -> Answer:
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
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b""
    if not started:
        log.error("the application answered without a status")
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b""
    return started[0], list(started[1]), b"".join(chunks)


_TITLES: dict[str, str] = {}


def _title(name: str) -> str:
    """A header name as waitress and most servers write it (Content-Type), whatever the app sent."""
    title = _TITLES.get(name)
    if title is None:
        title = "-".join(part.capitalize() for part in name.split("-"))
        if len(_TITLES) < 1000:
            _TITLES[name] = title
    return title


class Connection(asyncio.Protocol):
    """One client connection: h11 parses, the loop enforces the deadlines, a thread answers."""

    def __init__(self, site: Site, loop: asyncio.AbstractEventLoop, early: bool = False) -> None:
        self.site = site
        self.early = early  # holds a turn of its site until its first bytes are read
        self.loop = loop
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=site.limits.max_header)
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.seen = False  # bytes of the next request have arrived
        self.closed = False
        self.peer: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection against its listener and start the header deadline."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if self.site.draining or not self.site.admit():
            self.closed = True
            transport.abort()
            return
        self.site.waiting[self] = None
        self._header_deadline()

    def data_received(self, data: bytes) -> None:
        """Feed h11 and act on whatever is complete."""
        if self.closed:
            return
        self.seen = True
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # data after the client's own close: nothing more to read
            self.abort()
            return
        self._advance()
        self._settle()

    def _settle(self) -> None:
        if self.early:
            self.early = False
            self.site.settle()

    def eof_received(self) -> bool:
        """The client stopped sending; answer a request in hand before closing."""
        if not self.closed and self.h11.their_state is not h11.CLOSED:
            try:
                self.h11.receive_data(b"")
            except RuntimeError:
                pass
        if self in self.site.busy:
            return True
        self._advance()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self.closed = True
        self._settle()
        self._cancel()
        self.site.waiting.pop(self, None)

    def abort(self) -> None:
        """Drop the connection at once."""
        if not self.closed:
            self.closed = True
            self._cancel()
            self.site.waiting.pop(self, None)
            if self.transport is not None:
                self.transport.abort()

    def _advance(self) -> None:
        while not self.closed and self not in self.site.busy:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, "Bad Request")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._begin(event):
                    return
            elif isinstance(event, h11.Data):
                self.size += len(event.data)
                if self.size > self.site.limits.max_body:
                    self._refuse(413, "Payload Too Large")
                    return
                self.body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _begin(self, request: h11.Request) -> bool:
        self.request, self.body, self.size = request, [], 0
        length = next((v for k, v in request.headers if k == b"content-length"), b"0")
        if int(length) > self.site.limits.max_body:  # h11 checked that it is a number
            self._refuse(413, "Payload Too Large")
            return False
        self._deadline(self.site.limits.body_seconds)
        if self.h11.they_are_waiting_for_100_continue and self.transport is not None:
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            self.transport.write(self.h11.send(go_on) or b"")
        return True

    def _dispatch(self) -> None:
        assert self.transport is not None and self.request is not None
        self._cancel()
        self.site.waiting.pop(self, None)
        self.site.begin(self)
        self.transport.pause_reading()
        environ = self._environ(self.request, b"".join(self.body))
        app = self.site.listener.app
        future = self.loop.run_in_executor(self.site.pool, call_app, app, environ)
        future.add_done_callback(self._respond)

    def _respond(self, future: asyncio.Future[Answer]) -> None:
        self.site.end(self)
        if future.cancelled() or self.closed or self.transport is None or self.request is None:
            self.abort()
            return
        status, answered, body = future.result()
        headers = [(_title(name), value) for name, value in answered]
        if not any(name == "Content-Length" for name, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        if self.site.draining:
            headers.append(("Connection", "close"))
        code, _, reason = status.partition(" ")
        try:
            out = self.h11.send(
                h11.Response(
                    status_code=int(code), headers=[*headers, *self.site.extra], reason=reason
                )
            )
            if body and self.request.method != b"HEAD":
                out += self.h11.send(h11.Data(data=body)) or b""
            out += self.h11.send(h11.EndOfMessage()) or b""
        except (h11.LocalProtocolError, ValueError):
            log.exception("the application's answer is not valid HTTP")
            self.abort()
            return
        self.transport.write(out or b"")
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            self._close()
            return
        self.h11.start_next_cycle()
        self.request, self.body, self.seen = None, [], False
        self.site.waiting[self] = None
        self._header_deadline()
        self.transport.resume_reading()
        self._advance()

    def _environ(self, request: h11.Request, body: bytes) -> dict[str, Any]:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        environ = dict(self.site.base)
        environ.update(
            REQUEST_METHOD=request.method.decode("ascii"),
            PATH_INFO=unquote(path, "latin-1"),
            QUERY_STRING=query,
            SERVER_PROTOCOL="HTTP/" + request.http_version.decode("ascii"),
            REMOTE_ADDR=self.peer[0],
            REMOTE_PORT=str(self.peer[1]),
            CONTENT_LENGTH=str(len(body)),
        )
        environ["wsgi.input"] = io.BytesIO(body)
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1")
            if "_" in name:  # X_Forwarded_For would pass for X-Forwarded-For (CGI naming)
                continue
            key, value = name.upper().replace("-", "_"), raw_value.decode("latin-1")
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _refuse(self, status: int, reason: str) -> None:
        if self.transport is not None and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            answer = f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            self.transport.write(answer.encode())
        self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel()
            self.site.waiting.pop(self, None)
            if self.transport is not None:
                self.transport.close()

    def _header_deadline(self) -> None:
        """The header deadline, shortened by up to a quarter (by client port), so clients that
        connected together are not all cut, and do not all reconnect, in the same instant."""
        self._deadline(self.site.limits.header_seconds * (1 - (self.peer[1] % 256) / 1024))

    def _deadline(self, seconds: float) -> None:
        self._cancel()
        self.timer = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if self.closed or self in self.site.busy:
            return
        if self.seen and self.transport is not None:
            self.transport.write(TIMEOUT)
        self._close()


class Front:
    """Serves listeners on bound sockets from one event loop until stopped."""

    def __init__(
        self,
        bound: Sequence[tuple[Listener, socket.socket]],
        threads: int,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        raise_file_limit()
        extra = list(extra_headers)
        self.sites = [Site(listener, sock, threads, extra) for listener, sock in bound]
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def serve(
        self,
        keep_going: Callable[[], bool] = lambda: True,
        tick: Callable[[], None] = lambda: None,
        grace: float = 10.0,
    ) -> None:
        """Accept on every listener until `stop` (or `keep_going` turns false), then drain."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connecting: set[asyncio.Task[Any]] = set()

        def connect(site: Site, conn: socket.socket, early: bool) -> None:
            protocol = Connection(site, loop, early)
            task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, conn))
            connecting.add(task)
            task.add_done_callback(lambda done: _connected(done, conn, protocol, connecting))

        for site in self.sites:
            site.start(loop, lambda conn, early, site=site: connect(site, conn, early))  # type: ignore[misc]
        self.ready.set()
        while keep_going() and not self._stop.is_set():
            tick()
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except TimeoutError:
                pass
        await self._drain(grace, tick)

    def stop(self) -> None:
        """Stop accepting and finish the requests in hand (from any thread)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    async def _drain(self, grace: float, tick: Callable[[], None]) -> None:
        for site in self.sites:
            site.stop()
            for connection in list(site.waiting):
                connection.abort()
        deadline = time.monotonic() + grace
        while any(site.busy for site in self.sites) and time.monotonic() < deadline:
            tick()
            await asyncio.sleep(0.05)
        for site in self.sites:
            for connection in list(site.busy):
                connection.abort()
            site.pool.shutdown(wait=False, cancel_futures=True)


def _connected(
    task: asyncio.Task[Any],
    conn: socket.socket,
    protocol: Connection,
    pending: set[asyncio.Task[Any]],
) -> None:
    """Forget a finished connect; a socket that could not be set up is closed."""
    pending.discard(task)
    if task.cancelled() or task.exception() is not None:
        conn.close()
        protocol.connection_lost(None)
