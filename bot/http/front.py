"""The event-loop front: every listener holds its clients cheaply, with deadlines and limits.

A request reaches its WSGI app, on the listener's own thread pool, only once its header and body
are in: a slow or idle client costs a socket and a timer on the loop, never a thread, and each
listener counts its own connections, so clients of one port never starve another.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import h11

from bot.http import message
from bot.http.site import Site, raise_file_limit, unsent
from bot.http.wsgi import Listener

log = logging.getLogger("mdmbot.http")

TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
WRITE_HIGH = 16 * 1024  # answers a client has not taken, above which none of its requests is read
AHEAD = 16  # pipelined requests answered in a row; the last answer closes: the client queues again


class Connection(asyncio.BufferedProtocol):
    """One client connection: h11 parses, the loop enforces the deadlines, a thread answers.

    It holds little of a client that sends faster than it reads: at most one read of its
    pipelined requests waits unparsed, and none is read while a request of it is in the app or
    while more than `WRITE_HIGH` bytes of its answers wait for it to take them. A client that
    pipelines is closed after `AHEAD` answers in a row, so that it connects again behind the
    connections waiting to be accepted instead of keeping them out.
    """

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
        self.writing = True  # the client takes its answers (the transport did not pause us)
        self.suspect = False  # a folded header line may have come in (checked before parsing)
        self.last = b""  # the last byte read
        self.ahead = 0  # requests answered back to back from what the client sent ahead
        self.unsent = 0  # answer bytes the client had not taken when its stall deadline began
        self.closed = False
        self.peer: tuple[str, int] = ("", 0)

    @property
    def stage(self) -> int:
        """How far its request is: 0 none of it (or its answers not taken), 1 header, 2 body."""
        if not self.writing or not self.seen:
            return 0
        return 1 if self.request is None else 2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection against its listener and start the header deadline."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if self.site.draining or not self.site.admit():
            self.closed = True
            transport.abort()
            return
        self.site.waiting[self] = None
        self._header_deadline()

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads into: one buffer for every connection of the site."""
        return self.site.buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Feed what was read to h11 and act on whatever is complete."""
        if self.closed:
            return
        data = bytes(self.site.buffer[:nbytes])
        self.seen = True
        if not self.suspect and message.may_fold(data, self.last):
            self.suspect = True
        self.last = data[-1:]
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
        if self in self.site.busy or not self.writing:
            return True
        self._advance()
        return False

    def pause_writing(self) -> None:
        """The client is not taking its answers: read none of its requests until it does."""
        self.writing = False
        if self.transport is not None:
            self.transport.pause_reading()
        if self.request is None and self not in self.site.busy:
            self._stall()

    def resume_writing(self) -> None:
        """The client took its answers: go on with its next request."""
        self.writing = True
        if self.closed or self.transport is None or self in self.site.busy:
            return
        if self.request is None:
            self._header_deadline()
        self.transport.resume_reading()
        self._advance()

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
        while not self.closed and self.writing and self not in self.site.busy:
            if self.suspect and self.h11.their_state is h11.IDLE:
                if message.folded(self.h11.trailing_data[0]):
                    self._refuse(400)
                    return
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                self.ahead = 0 if event is h11.NEED_DATA else self.ahead
                return
            if isinstance(event, h11.Request):
                if not self._begin(event):
                    return
            elif isinstance(event, h11.Data):
                self.size += len(event.data)
                if self.size > self.site.limits.max_body:
                    self._refuse(413)
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
        refused = message.refusal(request, self.site.limits.max_header)
        if refused is not None:
            self._refuse(refused)
            return False
        length = next((v for k, v in request.headers if k == b"content-length"), b"0")
        if int(length) > self.site.limits.max_body:  # h11 checked that it is a number
            self._refuse(413)
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
        self.ahead += 1
        self.transport.pause_reading()
        environ = message.environ(self.site.base, self.peer, self.request, b"".join(self.body))
        app = self.site.listener.app
        future = self.loop.run_in_executor(self.site.pool, message.call_app, app, environ)
        future.add_done_callback(self._respond)

    def _respond(self, future: asyncio.Future[message.Answer]) -> None:
        self.site.end(self)
        if future.cancelled() or self.closed or self.transport is None or self.request is None:
            self.abort()
            return
        status, answered, body = future.result()
        headers = [(message.title(name), value) for name, value in answered]
        if not any(name == "Content-Length" for name, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        if self.site.draining or self.ahead >= AHEAD:
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
        self.transport.write(out or b"")  # may pause writing: the client is not reading
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            self._close()
            return
        self.h11.start_next_cycle()
        self.request, self.body, self.seen = None, [], False
        self.site.waiting[self] = None
        if not self.writing:
            self._stall()
            return
        self._header_deadline()
        self.transport.resume_reading()
        self._advance()

    def _refuse(self, status: int) -> None:
        if self.transport is not None and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            close = "Connection: close\r\nContent-Length: 0\r\n\r\n"
            self.transport.write(f"HTTP/1.1 {status} {message.reason(status)}\r\n{close}".encode())
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel()
        self.site.waiting.pop(self, None)
        transport = self.transport
        if transport is None:
            return
        transport.close()
        self._linger(transport, None)

    def _linger(self, transport: asyncio.Transport, before: int | None) -> None:
        """Drop a closed connection once its client took nothing for `header_seconds`."""
        left = unsent(transport) if transport.get_write_buffer_size() else 0
        if left and (before is None or left < before):
            self.loop.call_later(self.site.limits.header_seconds, self._linger, transport, left)
        elif left:
            transport.abort()

    def _stall(self) -> None:
        """Give a client that does not take its answers `header_seconds` to take some."""
        self.unsent = self._unsent()
        self._deadline(self.site.limits.header_seconds)

    def _unsent(self) -> int:
        return unsent(self.transport) if self.transport is not None else 0

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
        if not self.writing:
            if self._unsent() < self.unsent:  # it is taking its answers, slowly
                self._stall()
            else:
                self.abort()
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
