"""urllib3 connection pools for the MDM clients: one per checked address, name and CA bundle, so a
kept-open connection only ever serves the host it was verified for; each call is cut at its
deadline, since urllib3's Timeout bounds each socket read, not an answer trickled byte by byte."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection

from core.connections.links import InstallError

POOLS = 32  # (address, name, CA bundle) pools kept per process; the least recently used go first
KEPT_OPEN = 4  # idle connections kept per pool

_local = threading.local()


class Call:
    """One request's deadline: the socket of its connection is shut down when time is up, so a
    connect, TLS handshake or read in progress returns at once (in the `with` block's thread)."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self.sent = False
        self._watched: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Call:
        self._timer.start()
        _local.call = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.call = None
        self._timer.cancel()
        with self._lock:
            watched, self._watched = self._watched, {}
        for copy in watched.values():
            copy.close()

    def watch(self, sock: socket.socket) -> None:
        """Cut this connection at the deadline (through a copy of the descriptor: wrapping a
        socket in TLS detaches the object that was connected, not the connection)."""
        with self._lock:
            if sock.fileno() in self._watched:
                return
            copy = socket.fromfd(sock.fileno(), sock.family, sock.type)
            self._watched[sock.fileno()] = copy
            if self.fired:
                _shut(copy)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for copy in self._watched.values():
                _shut(copy)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _current() -> Call | None:
    call: Call | None = getattr(_local, "call", None)
    return call


class _Connection(HTTPConnection):
    """A connection whose socket the current Call watches, new or taken from the pool."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        call = _current()
        if call is not None:
            call.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        """Send the request; the current Call knows it was sent."""
        call = _current()
        if call is not None and self.sock is not None:
            call.watch(self.sock)
        super().request(*args, **kwargs)
        if call is not None:
            call.sent = True


class _TLSConnection(_Connection, HTTPSConnection):
    """The same over TLS."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def _manager() -> PoolManager:
    manager = PoolManager(num_pools=POOLS, maxsize=KEPT_OPEN, block=False, retries=False)
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager


_lock = threading.Lock()
_pools = _manager()
_contexts: dict[tuple[str | None, int], ssl.SSLContext] = {}


def _after_fork_in_child() -> None:
    """A forked worker opens its own connections (the parent's stay the parent's)."""
    global _lock, _pools
    _lock = threading.Lock()
    _pools = _manager()


os.register_at_fork(after_in_child=_after_fork_in_child)


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The verifying TLS context for `ca_bundle` (the system's CAs without one), made once per
    version of the file."""
    try:
        key = (ca_bundle, os.stat(ca_bundle).st_mtime_ns if ca_bundle else 0)
        with _lock:
            context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=ca_bundle)
            with _lock:
                context = _contexts.setdefault(key, context)
        return context
    except (OSError, ssl.SSLError) as exc:
        raise InstallError(
            f"Cannot read the CA bundle {ca_bundle} (MDMBOT_MDM_CA_BUNDLE): {exc}."
        ) from exc


def pool_for(
    scheme: str, ip: str, port: int, host: str, context: ssl.SSLContext | None
) -> HTTPConnectionPool:
    """The pool connecting to the checked address `ip`; over TLS, `host` is the name sent (SNI)
    and verified in the server's certificate."""
    tls = {"server_hostname": host, "ssl_context": context} if scheme == "https" else None
    return _pools.connection_from_host(ip, port, scheme, pool_kwargs=tls)
