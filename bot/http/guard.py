"""What the front refuses of a request before its app sees it, in the WSGI layer.

granian (hyper) parses the request and refuses on its own a folded header line, two different
Content-Length values, a header over its read buffer (431) and a header not finished in time.
It passes a request with Transfer-Encoding (hyper drops a Content-Length next to it) and has no
deadline for a body, so this layer refuses the one and times the other: the body is read on a
thread of its own, and a body not in within `Limits.body_seconds` is answered 408. granian sends
no answer while a read of the body is pending, so that client's connection (and one reader
thread) stays until it sends the rest or goes away; the app's thread is free at the deadline.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late
from typing import Any

from bot.http.wsgi import Listener, StartResponse, WsgiApp

log = logging.getLogger("mdmbot.http")
WORKER_HEADER = "X-Mdmbot-Worker"
BACKLOG_POLL = 0.002  # how often a request held back by its listener's backlog looks again


class Guard:
    """One listener's app behind the front's refusals, body deadline and backlog."""

    def __init__(self, listener: Listener) -> None:
        self.app: WsgiApp = listener.app
        self.limits = listener.limits
        self.backlog = listener.backlog
        self.readers: ThreadPoolExecutor | None = None  # made in the process that serves
        self.worker = ""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Refuse, or read the body in time and call the app; every answer names its worker."""
        if not self.worker:
            self.worker = str(os.getpid())

        def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, (WORKER_HEADER, self.worker)], exc_info)

        refusal = self._refusal(environ)
        if refusal is not None:
            return _refuse(answer, refusal)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = self._body(environ["wsgi.input"], length) if length else b""
        if body is None:
            return _refuse(answer, "408 Request Timeout")
        if len(body) < length:
            return _refuse(answer, "400 Bad Request")
        environ["wsgi.input"] = io.BytesIO(body)
        self._wait_for_backlog()
        try:
            return self.app(environ, answer)
        except Exception:
            log.exception("request failed")
            return _refuse(answer, "500 Internal Server Error")

    def _refusal(self, environ: dict[str, Any]) -> str | None:
        # RFC 9112 6.1: a request with Transfer-Encoding and Content-Length may be an attempt at
        # request smuggling; hyper keeps only the first, so any Transfer-Encoding is refused.
        if "HTTP_TRANSFER_ENCODING" in environ:
            return "400 Bad Request"
        declared = environ.get("CONTENT_LENGTH") or "0"
        if not (declared.isascii() and declared.isdigit()):
            return "400 Bad Request"
        if int(declared) > self.limits.max_body:
            return "413 Payload Too Large"
        return None

    def _body(self, stream: Any, length: int) -> bytes | None:
        """The declared body, read within the body deadline (None: it did not come in time)."""
        if self.readers is None:
            self.readers = ThreadPoolExecutor(self.limits.readers, thread_name_prefix="body")
        reading = self.readers.submit(stream.read, length)
        try:
            return bytes(reading.result(timeout=self.limits.body_seconds))
        except Late:
            reading.cancel()
            return None

    def _wait_for_backlog(self) -> None:
        """While the work queued behind earlier answers is at its limit, the next request waits
        (acks and the work after them slow down together; a lapsed job does not count)."""
        backlog = self.backlog
        if backlog is None:
            return
        until = time.monotonic() + max(backlog.lapse * 4, 0.2)
        while backlog.full() and time.monotonic() < until:
            time.sleep(BACKLOG_POLL)


def _refuse(start_response: StartResponse, status: str) -> Iterable[bytes]:
    """An empty answer that closes the connection (what follows on it is not read)."""
    start_response(
        status, [("Content-Type", "text/plain"), ("Content-Length", "0"), ("Connection", "close")]
    )
    return [b""]
