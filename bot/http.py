"""The HTTP front: each listener serves one WSGI app (Slack, metrics, …).

One process is served by waitress, several worker processes by gunicorn (threaded workers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from slack_bolt import App, BoltRequest
from waitress import wasyncore
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

from bot import metrics
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
class Listener:
    """One listening address and the WSGI app it serves."""

    name: str
    host: str
    port: int
    app: WsgiApp


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

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if path == "/slack/events" and method == "POST":
            return self._slack(environ, start_response)
        if path == "/healthz" and method in ("GET", "HEAD"):
            report = self.health()
            status = "200 OK" if report.get("status") == "ok" else "503 Service Unavailable"
            return _reply(start_response, status, json.dumps(report).encode(), "application/json")
        return _reply(start_response, "404 Not Found", b"Not Found", "text/plain")

    def _slack(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            return _reply(start_response, "413 Payload Too Large", b"Too large", "text/plain")
        raw = environ["wsgi.input"].read(length)
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        if not signature_ok(self.signing_secret, raw, headers, time.time()):
            metrics.requests.labels("unverified", "401").inc()
            return _reply(start_response, "401 Unauthorized", b"Unauthorized", "text/plain")
        body = raw.decode("utf-8", errors="replace")
        kind = request_kind(body)
        try:
            response = self.app.dispatch(
                BoltRequest(
                    body=body,
                    query=environ.get("QUERY_STRING", ""),
                    headers=headers,
                    context={VERIFIED: True},
                )
            )
        except Exception:
            log.exception("request failed")
            metrics.requests.labels(kind, "500").inc()
            return _reply(start_response, "500 Internal Server Error", b"", "text/plain")
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


def _reply(start_response: StartResponse, status: str, body: bytes, ctype: str) -> Iterable[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


class HttpServer:
    """One process serving every listener with waitress (one thread pool), stopping on SIGTERM."""

    def __init__(self, listeners: Sequence[Listener], threads: int = 4) -> None:
        self._map: dict[int, Any] = {}
        self._tasks = ThreadedTaskDispatcher()
        self._tasks.set_thread_count(threads)
        self.servers = {
            listener.name: create_server(
                listener.app,
                map=self._map,
                _dispatcher=self._tasks,
                host=listener.host,
                port=listener.port,
                threads=threads,
                ident="mdmbot",
                clear_untrusted_proxy_headers=True,
                # An oversized declared body is refused (413) before waitress buffers it.
                max_request_body_size=MAX_BODY,
            )
            for listener in listeners
        }
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port of the first listener."""
        return next(iter(self.ports.values()))

    @property
    def ports(self) -> dict[str, int]:
        """The bound port of each listener (useful with port 0)."""
        return {name: int(server.effective_port) for name, server in self.servers.items()}  # type: ignore[union-attr]

    def serve_forever(self, on_stop: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""

        def stop(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        for name, port in self.ports.items():
            log.info("listening on port %s (%s)", port, name)
        try:
            wasyncore.loop(timeout=1.0, map=self._map)
        except SystemExit:
            log.info("stopping")
        finally:
            self.close()
            if on_stop is not None:
                on_stop()
            self.stopped.set()

    def start_in_background(self, name: str) -> HttpServer:
        """Serve from a daemon thread (ends with the process, or with `close`)."""
        self.thread = threading.Thread(
            target=wasyncore.loop, kwargs={"timeout": 1.0, "map": self._map}, name=name, daemon=True
        )
        self.thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish the requests in hand and close every socket."""
        if self.thread is not None and self.thread.is_alive():
            # Sockets are closed by the loop's own thread, never under its feet (waitress).
            trigger: Any = next(iter(self.servers.values())).trigger  # type: ignore[union-attr]
            try:
                trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            except OSError:  # the loop already closed its trigger (and is ending)
                log.warning("HTTP server was already closing")
            self.thread.join(timeout)
        else:
            wasyncore.close_all(self._map)
        self._tasks.shutdown(timeout=int(timeout))


def start_in_background(listener: Listener, threads: int) -> HttpServer:
    """Serve one more listener from a daemon thread (refused in one line if its port is taken)."""
    check_listeners([listener])
    return HttpServer([listener], threads).start_in_background(listener.name)


@dataclass(frozen=True)
class WorkerHooks:
    """What each worker process does around serving (background threads start after fork)."""

    start: Callable[[], None]
    stop: Callable[[], None]
    after_fork: Callable[[], None] = lambda: None


def serve_workers(
    listeners: Sequence[Listener], workers: int, threads: int, hooks: WorkerHooks
) -> int:
    """Serve every listener from `workers` gunicorn processes of `threads` threads until SIGTERM.

    The apps are built once before forking; each accepted connection is routed to the app of
    the listener it arrived on (the socket's local port).
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    by_port: dict[int, WsgiApp] = {}

    def route(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        app = by_port.get(environ["gunicorn.socket"].getsockname()[1])
        if app is None:
            return _reply(start_response, "404 Not Found", b"Not Found", "text/plain")
        worker = ("X-Mdmbot-Worker", str(os.getpid()))

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, worker], exc_info)

        return app(environ, start)

    def when_ready(arbiter: Any) -> None:
        for listener, sock in zip(listeners, arbiter.LISTENERS, strict=True):
            by_port[sock.getsockname()[1]] = listener.app
            log.info("listening on port %s (%s)", sock.getsockname()[1], listener.name)

    class RootLogger(Logger):  # type: ignore[misc]
        """gunicorn's messages go through mdmbot's logging (text or JSON, redacted)."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers.clear()
                logger.propagate = True

    options: dict[str, Any] = {
        "bind": [_bind(listener.host, listener.port) for listener in listeners],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "preload_app": True,
        "graceful_timeout": 20,
        "proc_name": "mdmbot",
        "logger_class": RootLogger,
        "control_socket_disable": True,
        "when_ready": when_ready,
        "post_fork": lambda arbiter, worker: hooks.after_fork(),
        "post_worker_init": lambda worker: hooks.start(),
        "worker_exit": lambda arbiter, worker: hooks.stop(),
        "child_exit": lambda arbiter, worker: metrics.worker_exited(worker.pid),
    }

    class Front(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WsgiApp:
            return route

    try:
        Front().run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
