"""The HTTP front: Slack requests on /slack/events, /healthz and /metrics, served by waitress."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from slack_bolt import App, BoltRequest
from waitress.server import create_server

from bot import metrics

log = logging.getLogger("mdmbot.http")

MAX_BODY = 1024 * 1024
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


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

    def __init__(self, app: App, health: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.health = health

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if path == "/slack/events" and method == "POST":
            return self._slack(environ, start_response)
        if path == "/healthz" and method in ("GET", "HEAD"):
            report = self.health()
            status = "200 OK" if report.get("status") == "ok" else "503 Service Unavailable"
            return _reply(start_response, status, json.dumps(report).encode(), "application/json")
        if path == "/metrics" and method == "GET":
            return _reply(
                start_response,
                "200 OK",
                metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        return _reply(start_response, "404 Not Found", b"Not Found", "text/plain")

    def _slack(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            return _reply(start_response, "413 Payload Too Large", b"Too large", "text/plain")
        body = environ["wsgi.input"].read(length).decode("utf-8", errors="replace")
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        kind = request_kind(body)
        try:
            response = self.app.dispatch(
                BoltRequest(body=body, query=environ.get("QUERY_STRING", ""), headers=headers)
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
    """A concurrent production HTTP server (waitress, a thread pool) that stops on SIGTERM."""

    def __init__(self, wsgi: WsgiApp, host: str, port: int, threads: int = 4) -> None:
        self.server = create_server(
            wsgi,
            host=host,
            port=port,
            threads=threads,
            ident="mdmbot",
            clear_untrusted_proxy_headers=True,
        )
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.effective_port)  # type: ignore[union-attr]

    def close(self, timeout: float = 5.0) -> None:
        """Stop a server started by `start_in_background`: its own thread closes the sockets."""
        try:
            self.server.trigger.pull_trigger(self.server.close)  # type: ignore[union-attr]
        except OSError:  # the loop already closed its trigger (and is ending)
            log.warning("HTTP server on port %s was already closing", self.port)
        if self.thread is not None:
            self.thread.join(timeout)
        self.server.task_dispatcher.shutdown(timeout=int(timeout))

    def serve_forever(self, on_stop: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""

        def stop(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        log.info("listening on port %s", self.port)
        try:
            self.server.run()
        except SystemExit:
            log.info("stopping")
        finally:
            self.server.close()
            if on_stop is not None:
                on_stop()
            self.stopped.set()


def start_in_background(wsgi: WsgiApp, host: str, port: int, threads: int, name: str) -> HttpServer:
    """Serve another WSGI app on its own listener from a daemon thread (ends with the process)."""
    server = HttpServer(wsgi, host, port, threads)
    server.thread = threading.Thread(target=server.server.run, name=name, daemon=True)
    server.thread.start()
    return server
