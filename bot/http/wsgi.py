"""What the HTTP front serves: listeners, their limits, and the Slack WSGI app."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import App, BoltRequest

from bot import metrics
from bot.http.backlog import Backlog
from bot.slack import acks
from core.errors import ConfigError

log = logging.getLogger("mdmbot.http")

MAX_BODY = 1024 * 1024
SIGNATURE_WINDOW = 300  # Slack: reject requests whose timestamp is more than 5 minutes off
VERIFIED = "mdmbot_verified"  # set in the bolt context of requests whose signature was checked
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def signature_ok(secret: str, body: bytes, headers: dict[str, str], now: float) -> bool:
    """Slack's v0 request signature over the raw body, with a 5-minute timestamp window."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Limits:
    """What one listener allows each client: deadlines and sizes of a request."""

    header_seconds: float = 10.0  # to a whole header, from connecting or the last answer
    body_seconds: float = 20.0  # from the header to the whole declared body
    max_header: int = 16 * 1024  # granian's read buffer: a larger header is refused with 431
    max_body: int = MAX_BODY
    connections: int = 4096  # held at once per worker (granian's backpressure); then queued


@dataclass(frozen=True)
class Listener:
    """One listening address, the WSGI app it serves and its limits."""

    name: str
    host: str
    port: int
    app: WsgiApp
    limits: Limits = field(default_factory=Limits)
    backlog: Backlog | None = None  # work the app does after an answer; full: the next waits
    workers: int | None = None  # its own number of processes (None: as many as --workers)
    # which requests the worker answers on its event loop, one at a time, with no hand-off to a
    # thread: ones that wait on nothing slow; the others go to the listener's thread pool
    on_loop: Callable[[dict[str, Any]], bool] = field(default=lambda environ: False)


def check_listeners(listeners: Sequence[Listener]) -> None:
    """Refuse, in one line, listeners that share a port or whose address is taken."""
    ports = [listener.port for listener in listeners if listener.port]
    if len(ports) != len(set(ports)):
        raise ConfigError("Each listener needs its own port (--port, --metrics-port, …).")
    for listener in listeners:
        family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((listener.host, listener.port))
            except OSError as exc:
                raise ConfigError(
                    f"Cannot listen on {listener.host}:{listener.port} for {listener.name} "
                    f"({exc.strerror or exc}); is another process using it?"
                ) from exc


def every_request(environ: dict[str, Any]) -> bool:
    """`Listener.on_loop` for an app none of whose requests waits on another service."""
    return True


def request_kind(body: str) -> str:
    """Which kind of Slack request a body is (for metrics)."""
    if body.startswith("{"):
        return "event"
    if body.startswith("payload=") or "&payload=" in body:
        return "interactivity"
    if "command=" in body:
        return "command"
    return "other"


class SlackWsgi:
    """A WSGI application in front of the bolt App."""

    def __init__(
        self, app: App, health: Callable[[], dict[str, Any]], *, signing_secret: str
    ) -> None:
        self.app = app
        self.health = health
        self.signing_secret = signing_secret

    @staticmethod
    def on_loop(environ: dict[str, Any]) -> bool:
        """`Listener.on_loop`: every request but an interactive payload, which may wait on Slack
        before it answers (a modal's file is fetched from Slack to check it)."""
        body = environ.get("wsgi.input")
        return not (isinstance(body, io.BytesIO) and body.getbuffer()[:8].tobytes() == b"payload=")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if path == "/slack/events" and method == "POST":
            return self._slack(environ, start_response)
        if path == "/healthz" and method in ("GET", "HEAD"):
            report = self.health()
            status = "200 OK" if report.get("status") == "ok" else "503 Service Unavailable"
            return reply(start_response, status, json.dumps(report).encode(), "application/json")
        return reply(start_response, "404 Not Found", b"Not Found", "text/plain")

    def _slack(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            return reply(start_response, "413 Payload Too Large", b"Too large", "text/plain")
        raw = environ["wsgi.input"].read(length)
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        if not signature_ok(self.signing_secret, raw, headers, time.time()):
            metrics.requests.labels("unverified", "401").inc()
            return reply(start_response, "401 Unauthorized", b"Unauthorized", "text/plain")
        body = raw.decode("utf-8", errors="replace")
        kind = request_kind(body)
        try:
            response = self.app.dispatch(
                BoltRequest(
                    body=body,
                    query=environ.get("QUERY_STRING", ""),
                    headers=headers,
                    context={VERIFIED: True, "ack": acks.expect()},
                )
            )
        except Exception:
            log.exception("request failed")
            metrics.requests.labels(kind, "500").inc()
            return reply(start_response, "500 Internal Server Error", b"", "text/plain")
        finally:
            acks.forget()
        metrics.requests.labels(kind, str(response.status)).inc()
        metrics.ack_seconds.labels(kind).observe(time.perf_counter() - started)
        out = [(name, value) for name, values in response.headers.items() for value in values]
        start_response(f"{response.status} {_REASONS.get(response.status, 'OK')}", out)
        return [response.body.encode("utf-8")]


_REASONS = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
}


def reply(start_response: StartResponse, status: str, body: bytes, ctype: str) -> Iterable[bytes]:
    """Answer a WSGI request with one body of one content type."""
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
