"""A Slack Web API client that keeps its HTTP connections open between calls.

slack_sdk's `WebClient` opens a new connection (and, to slack.com, a new TLS session) for every
call. `KeepAliveWebClient` sends the same requests over a small pool of persistent HTTP/1.1
connections per process, so a modal opens one handshake sooner and each call costs less CPU on
both ends. Everything else (retries, errors, rate limits) is slack_sdk's own: a connection error
or an HTTP error reaches its retry handlers exactly as `urllib.request.urlopen` would raise it.

Why not urllib3's pool (as bot/mdm uses): slack_sdk 3.48's `BaseClient` takes no session or
transport, only `ssl` and `proxy`; its `_perform_urllib_http_request_internal` calls `urlopen`,
whose handlers send `Connection: close` (`AbstractHTTPHandler.do_open`), and `install_opener` is
process-wide. So any pool overrides that method, and behind it urllib3 needs more glue (its
errors turned into `URLError`, its headers into the `HTTPMessage` slack_sdk reads) and measured
more CPU: 210-275 µs of client CPU per `auth.test` against the fake, 122-150 µs with this pool.
"""

from __future__ import annotations

import http.client
import io
import os
import select
import ssl
import threading
import time
import weakref
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, getproxies, proxy_bypass

from slack_sdk import WebClient

IDLE_PER_HOST = 8  # connections kept open per host and process when no call is using them
# A server closes an idle connection after its keep-alive timeout (seconds to minutes), so one
# idle for less than this is taken without asking the kernel whether it is still open (a system
# call, and under load a hand-over of the interpreter lock); a close in between fails the call as
# a dropped connection, which slack_sdk's ConnectionErrorRetryHandler sends again on a new one.
FRESH = 1.0
Origin = tuple[str, str, int]


class ConnectionPool:
    """Idle HTTP connections per origin, for one process (a forked child starts with none)."""

    def __init__(
        self, timeout: float, context: ssl.SSLContext | None = None, size: int = IDLE_PER_HOST
    ) -> None:
        self.timeout = timeout
        self.context = context  # None: the default, made at the first https connection
        self.size = size
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        _POOLS.add(self)

    def take(self, origin: Origin) -> http.client.HTTPConnection:
        """An idle connection the server has not closed, or a new one."""
        with self._lock:
            idle = self._idle.get(origin) or []
            while idle:
                connection, since = idle.pop()
                if time.monotonic() - since < FRESH or _still_open(connection):
                    return connection
                connection.close()
        scheme, host, port = origin
        if scheme == "https":
            if self.context is None:
                self.context = ssl.create_default_context()  # loading the CAs takes ~25 ms
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def give_back(self, origin: Origin, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose last response was read in full, unless the pool is full."""
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.size:
                idle.append((connection, time.monotonic()))
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, _ in connections:
                connection.close()

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections stay the parent's."""
        self._lock = threading.Lock()
        for connections in self._idle.values():
            for connection, _ in connections:
                connection.close()  # the child's copy of the descriptor; the parent's stays open
        self._idle = {}


_POOLS: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection may carry a request (one the server closed reads as EOF)."""
    # RFC 9112 §9.6: a server sends nothing unasked on an idle connection, so readable = closed.
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class KeepAliveWebClient(WebClient):
    """A WebClient whose calls share persistent connections (through a proxy: slack_sdk's own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = ConnectionPool(float(self.timeout), self.ssl)
        self._proxies = getproxies()
        self._direct: dict[Origin, bool] = {}

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        """POST `req` over a pooled connection; answer as slack_sdk's urllib transport does."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return dict(super()._perform_urllib_http_request_internal(url, req))
        origin = (scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80))
        if not self._goes_direct(origin):
            return dict(super()._perform_urllib_http_request_internal(url, req))
        connection = self.pool.take(origin)
        try:
            try:
                connection.request(
                    req.get_method(), req.selector, body=req.data, headers=dict(req.header_items())
                )
            except OSError as exc:  # urlopen raises a failed connect or send as URLError
                raise URLError(exc) from exc
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self.pool.give_back(origin, connection)
        if not 200 <= response.status < 300:  # Slack's Web API never redirects: a 3xx is an error
            fp = io.BytesIO(body)
            raise HTTPError(url, response.status, response.reason, response.headers, fp)
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": body}
        charset = response.headers.get_content_charset() or "utf-8"
        text = body.decode(charset)
        return {"status": response.status, "headers": response.headers, "body": text}

    def _goes_direct(self, origin: Origin) -> bool:
        """Whether calls to `origin` bypass any proxy (a `proxy=` or HTTPS_PROXY setting)."""
        direct = self._direct.get(origin)
        if direct is None:
            scheme, host, _ = origin
            direct = self.proxy is None and (
                not self._proxies.get(scheme) or bool(proxy_bypass(host))
            )
            self._direct[origin] = direct
        return direct
