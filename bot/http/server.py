"""Running the front: one process (`HttpServer`), or gunicorn worker processes (`serve_workers`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot import metrics
from bot.http.front import Front
from bot.http.wsgi import Listener, WsgiApp, check_listeners, reply

log = logging.getLogger("mdmbot.http")
BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class HttpServer:
    """One process serving every listener from one event loop, stopping on SIGTERM."""

    def __init__(self, listeners: Sequence[Listener], threads: int = 4) -> None:
        self.sockets = [bind(listener.host, listener.port) for listener in listeners]
        self.names = [listener.name for listener in listeners]
        self.front = Front(list(zip(listeners, self.sockets, strict=True)), threads)
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port of the first listener."""
        return next(iter(self.ports.values()))

    @property
    def ports(self) -> dict[str, int]:
        """The bound port of each listener (useful with port 0)."""
        return {
            name: int(sock.getsockname()[1])
            for name, sock in zip(self.names, self.sockets, strict=True)
        }

    def serve_forever(self, on_stop: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        for name, port in self.ports.items():
            log.info("listening on port %s (%s)", port, name)

        async def main() -> None:
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.front.stop)
            await self.front.serve()

        try:
            asyncio.run(main())
            log.info("stopping")
        finally:
            self._close_sockets()
            if on_stop is not None:
                on_stop()
            self.stopped.set()

    def start_in_background(self, name: str) -> HttpServer:
        """Serve from a daemon thread (ends with the process, or with `close`)."""
        self.thread = threading.Thread(
            target=asyncio.run, args=(self.front.serve(),), name=name, daemon=True
        )
        self.thread.start()
        if not self.front.ready.wait(10):
            raise RuntimeError("the HTTP front did not start within 10 s")
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish the requests in hand and close every socket."""
        if self.thread is not None and self.thread.is_alive():
            self.front.stop()
            self.thread.join(timeout)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


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
    """Serve every listener from `workers` gunicorn processes until SIGTERM.

    The gunicorn master binds the listeners and watches the workers; each worker runs the
    event-loop front on the inherited sockets, the apps built once before forking.
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger
    from gunicorn.workers.base import Worker

    class FrontWorker(Worker):  # type: ignore[misc]
        """A gunicorn worker whose connections are held by the event-loop front."""

        def run(self) -> None:
            bound = zip(listeners, self.sockets, strict=True)
            front = Front(
                [(listener, sock.sock) for listener, sock in bound],
                threads,
                [("X-Mdmbot-Worker", str(os.getpid()))],
            )
            asyncio.run(
                front.serve(
                    keep_going=lambda: self.alive and self.ppid == os.getppid(),
                    tick=self.notify,
                    grace=float(self.cfg.graceful_timeout),
                )
            )

    def when_ready(arbiter: Any) -> None:
        for listener, sock in zip(listeners, arbiter.LISTENERS, strict=True):
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
        "worker_class": FrontWorker,
        "backlog": BACKLOG,
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

    def unrouted(environ: dict[str, Any], start_response: Any) -> Any:
        return reply(start_response, "404 Not Found", b"Not Found", "text/plain")

    class Master(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WsgiApp:
            return unrouted  # each worker serves the listeners' own apps, never this one

    try:
        Master().run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
