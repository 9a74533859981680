"""One listener in one process: its socket, thread pool, open connections, and when it accepts.

A worker takes a new connection only while it has a free turn: `Limits.turns` requests may run
in its app at once, and a request that has run `Limits.turn_seconds` gives its turn back (it is
waiting on a lock, the disk or Slack, not on this process's interpreter). Connections it does not
take wait in the kernel's accept queue, which every worker shares, so the next free worker takes
them in order. Without turns, the threads of one process would interleave their requests under
the GIL, and one worker could take most of the connections while another stood idle.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import resource
import socket
import struct
import sys
import termios
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from bot.http.wsgi import Limits, Listener

log = logging.getLogger("mdmbot.http")

READ_SIZE = 16 * 1024  # read from a client at once: at most this of its requests waits unparsed
UNTURNED_BATCH = 64  # connections taken per wake-up when the listener has no turns
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Held(Protocol):
    """A connection as its site sees it."""

    @property
    def stage(self) -> int:
        """How far its request is: 0 none of it (or its answers not taken), 1 header, 2 body."""

    def abort(self) -> None:
        """Drop the connection at once."""


class Site:
    """One listener in one process: its app, limits, thread pool and open connections."""

    def __init__(self, listener: Listener, sock: socket.socket, threads: int, extra: list[Any]):
        self.listener = listener
        self.limits: Limits = listener.limits
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"http-{port}")
        self.extra = extra  # headers added to every answer
        self.buffer = memoryview(bytearray(READ_SIZE))  # what each read of a client goes into
        self.waiting: dict[Held, None] = {}  # waiting for a request, longest waiting first
        self.busy: set[Held] = set()  # a request in the app
        self.turns: dict[Held, asyncio.TimerHandle] = {}  # busy, and still counted as running
        self.early = 0  # accepted with their first bytes already in, not yet read
        self.recheck: asyncio.TimerHandle | None = None  # while the app's backlog is full
        self.draining = False
        self.accepting = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connect: Callable[[socket.socket, bool], None] = lambda conn, early: None
        self.base: dict[str, Any] = {
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def start(
        self, loop: asyncio.AbstractEventLoop, connect: Callable[[socket.socket, bool], None]
    ) -> None:
        """Accept on the socket from `loop`, handing each new socket to `connect`.

        `connect` is told whether the socket's first bytes were already in: such a connection
        holds a turn until `settle` (its request is about to take one of its own).
        """
        self.loop, self.connect = loop, connect
        if self.listener.backlog is not None:
            self.listener.backlog.watch(self._backlog_freed)
        self.sock.setblocking(False)
        if self.limits.turns and hasattr(socket, "TCP_DEFER_ACCEPT"):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        self._resume()

    def stop(self) -> None:
        """Accept no more and close the listening socket (other workers keep their own)."""
        self.draining = True
        self._pause()
        self.sock.close()

    def admit(self) -> bool:
        """Make room for one more connection: at the limit, drop the longest waiting of those
        idle (or not taking their answers), else of those sending a header, else a body."""
        if len(self.waiting) + len(self.busy) < self.limits.connections:
            return True
        victim: Held | None = None
        for held in self.waiting:
            if victim is None or held.stage < victim.stage:
                victim = held
                if held.stage == 0:
                    break
        if victim is None:
            return False
        victim.abort()
        return True

    def begin(self, held: Held) -> None:
        """A request of `held` goes into the app: it takes a turn."""
        self.busy.add(held)
        if self.limits.turns and self.loop is not None:
            self.turns[held] = self.loop.call_later(self.limits.turn_seconds, self._lapse, held)
            self._update()

    def end(self, held: Held) -> None:
        """The app answered `held` (or it went away): its turn is free, and a connection waiting
        to be accepted takes it before `held` sends its next request in (a client pipelining
        requests back to back would otherwise keep every new connection out)."""
        self.busy.discard(held)
        timer = self.turns.pop(held, None)
        if timer is not None:
            timer.cancel()
        self._update()
        if self.accepting:
            self._accept()

    def settle(self) -> None:
        """A connection accepted with its first bytes in has read them."""
        self.early -= 1
        self._update()

    def _lapse(self, held: Held) -> None:
        self.turns.pop(held, None)
        self._update()

    def _recheck(self) -> None:
        self.recheck = None
        self._update()

    def _backlog_freed(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._update)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _free(self) -> bool:
        if len(self.busy) >= self.threads:
            return False
        backlog = self.listener.backlog
        if backlog is not None and backlog.full():
            if self.recheck is None and self.loop is not None:
                self.recheck = self.loop.call_later(backlog.lapse, self._recheck)
            return False
        return not self.limits.turns or len(self.turns) + self.early < self.limits.turns

    def _update(self) -> None:
        if self._free():
            self._resume()
        else:
            self._pause()

    def _resume(self) -> None:
        if not self.accepting and not self.draining and self.loop is not None and self._free():
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.accepting = True

    def _pause(self) -> None:
        if self.accepting and self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def _accept(self) -> None:
        # With turns, one connection per wake-up: one whose request is in holds a turn at once.
        for _ in range(1 if self.limits.turns else UNTURNED_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                log.error("cannot accept on %s: %s", self.listener.name, exc.strerror or exc)
                if exc.errno in OUT_OF_RESOURCES and self.loop is not None:
                    self._pause()
                    self.loop.call_later(1.0, self._resume)
                return
            conn.setblocking(False)
            early = bool(self.limits.turns) and _has_bytes(conn)
            self.early += early
            self.connect(conn, early)
            if early:
                self._update()
                if not self.accepting:
                    return


def _has_bytes(conn: socket.socket) -> bool:
    """Whether the client's first bytes have arrived (a peek: they stay to be read)."""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK))
    except OSError:  # nothing yet (BlockingIOError), or already reset
        return False


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


def unsent(transport: asyncio.Transport) -> int:
    """Bytes written to a client that it has not taken: the transport's and the kernel's."""
    left = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None:
        return left
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile, or not a socket that reports it
        return left
    return left + int(struct.unpack("i", queued)[0])
