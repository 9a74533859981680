"""Serving the listeners on granian, each listener on granian servers of its own.

`serve_processes` (`mdmbot serve --http`): this process binds every listener, then forks one
granian process server per listener, which forks that listener's workers; a busy or attacked
port takes none of another port's processes, threads or accept queue. This process then runs
the scheduler and stops the servers on SIGTERM. `HttpServer` serves listeners from threads of
this process with the same granian worker (tests, tools, and the Apple port in Socket Mode).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import granian._granian
from granian._granian import WorkerSignal
from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes, TaskImpl
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer, MTServer

from bot import metrics
from bot.http.guard import Guard
from bot.http.signals import StopSignals
from bot.http.wsgi import Limits, Listener, check_listeners

log = logging.getLogger("mdmbot.http")
BACKLOG = 2048  # connections the kernel queues for a listener before its workers accept them
STOP_SECONDS = 20  # a worker still answering after this long is killed
# granian's own messages go through mdmbot's logging (text or JSON, redacted), warnings and up.
GRANIAN_LOGGING: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "level": "WARNING", "propagate": True},
        "granian.access": {"handlers": [], "level": "WARNING", "propagate": False},
    }
}
NO_TLS: tuple[Any, ...] = (False, None, None, None, "tls1.3", None, [], False)
_NATIVE: Any = granian._granian  # its type stubs lag its signatures (granian 2.8.x is pinned)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one), kept across a fork."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port)
    sock.set_inheritable(True)
    return sock


PR_SET_PDEATHSIG = 1  # Linux prctl(2)


def die_with(parent: int) -> None:
    """Have this forked process sent SIGTERM when `parent` ends, even killed with SIGKILL:
    orphaned, it would go on serving the port with the old code (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    elif os.getppid() != parent:  # it ended before prctl
        os.kill(os.getpid(), signal.SIGTERM)


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


def http1(limits: Limits) -> HTTP1Settings:
    """granian's HTTP/1 settings for a listener: the header deadline and the header size."""
    return HTTP1Settings(
        header_read_timeout=int(limits.header_seconds * 1000),
        keep_alive=True,
        max_buffer_size=max(8192, limits.max_header),
    )


@dataclass(frozen=True)
class WorkerHooks:
    """What each worker process does after the fork (before serving) and when it stops."""

    stop: Callable[[], None]
    after_fork: Callable[[], None] = lambda: None


class _BoundServer(MPServer):
    """granian's process server on a socket mdmbot bound (port 0 works); its first worker
    accepts from it, each other worker from a socket of its own on the same port."""

    def __init__(self, sock: socket.socket, **options: Any) -> None:
        self.sock = sock
        self.waking = False
        super().__init__("mdmbot", **options)

    def _init_shared_socket(self) -> None:
        self._ssp = None
        self._shd = _NATIVE.SocketHolder(self.sock.fileno(), False, BACKLOG)
        self._sfd = cast(Any, self.sock.fileno())
        self._sso = self.sock

    def _drop_shared_socket(self) -> None:
        self.sock.close()

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        """granian's, safe when another signal comes while it runs (bot.http.signals)."""
        self.interrupt_signal = True
        self._wake()

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        """granian's, safe when another signal comes while it runs (bot.http.signals)."""
        self.reload_signal = True
        self._wake()

    def _wake(self) -> None:
        if self.waking:  # a signal handled inside another's set(): that set() wakes the loop
            return
        self.waking = True
        try:
            self.main_loop_interrupt.set()
        finally:
            self.waking = False


def _own_socket(worker_id: int, shared: Any) -> Any:
    """The socket a worker accepts from: the shared one for the first, else one of its own.

    granian's workers race for each connection on a shared socket and the busy one wins:
    measured, one worker of two held 12 to 18 of 16 connections (bench/README.md, issue 35).
    With SO_REUSEPORT the kernel spreads new connections over the workers' sockets.
    """
    holder, sock = shared
    if worker_id == 1 or sock is None:
        return shared
    host, port = sock.getsockname()[:2]
    own = bind(host, port, reuse_port=True)
    return (holder[0], _NATIVE.SocketHolder(own.fileno(), False, BACKLOG)), own


def _worker(hooks: WorkerHooks, guard: Guard, server: int) -> Callable[..., None]:
    """granian's RSGI worker process, with mdmbot's hooks around it.

    A worker starts with its granian server's signal handlers, which stop that server, not the
    worker: a SIGTERM before the worker sets its own was lost, and the worker killed 20 s later.
    One that arrives while the worker starts is held, and sent again once granian handles it.
    """

    def run(worker_id: int, name: Any, loader: Any, shared: Any, *args: Any) -> None:
        held: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: held.append(signum))

        def send_again() -> None:
            for signum in held:
                os.kill(os.getpid(), signum)

        guard.on_start = send_again
        guard.slot = worker_id - 1
        die_with(server)
        hooks.after_fork()
        try:
            sock = _own_socket(worker_id, shared)
            MPServer._spawn_rsgi_worker(worker_id, name, loader, sock, *args)
        finally:
            hooks.stop()
            metrics.worker_exited(os.getpid())

    return run


def _serve_listener(
    listener: Listener, sock: socket.socket, workers: int, threads: int, hooks: WorkerHooks
) -> int:
    """Run one listener's granian process server until SIGTERM (in its own process)."""
    guard: Any = Guard(listener, threads)
    server = _BoundServer(
        sock,
        address=listener.host,
        port=int(sock.getsockname()[1]),
        interface=Interfaces.RSGI,
        workers=listener.workers or workers,
        backpressure=listener.limits.connections,
        backlog=BACKLOG,
        http=HTTPModes.http1,
        http1_settings=http1(listener.limits),
        log_level=LogLevels.warning,  # granian sets its logger to this over the dict's level
        log_dictconfig=GRANIAN_LOGGING,
        workers_kill_timeout=STOP_SECONDS,
        respawn_failed_workers=True,
    )
    try:
        worker = _worker(hooks, guard, os.getpid())
        server.serve(spawn_target=worker, target_loader=lambda: guard, wrap_loader=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def serve_processes(
    listeners: Sequence[Listener],
    workers: int,
    threads: int,
    hooks: WorkerHooks,
    run: Callable[[], Callable[[], None]] = lambda: lambda: None,
) -> int:
    """Serve each listener from granian servers of its own until SIGTERM; 1 if one failed.

    `run` starts what this process does while they serve (the scheduler) and returns how to
    stop it; it is called after the forks, so no thread of it crosses one.
    """
    check_listeners(listeners)
    raise_file_limit()  # every listener's workers inherit it
    sockets = [bind(listener.host, listener.port, reuse_port=True) for listener in listeners]
    stopping = StopSignals()  # before forking: a SIGTERM now stops them too
    servers: dict[int, str] = {}
    top = os.getpid()
    for listener, sock in zip(listeners, sockets, strict=True):
        if listener.backlog is not None:
            listener.backlog.share(listener.workers or workers)  # before its workers fork
        pid = os.fork()
        if pid == 0:  # the listener's own granian process server
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)  # until granian sets its own
                die_with(top)
                for other in sockets:
                    if other is not sock:
                        other.close()
                code = _serve_listener(listener, sock, workers, threads, hooks)
            except BaseException:
                log.exception("the %s listener failed", listener.name)
            finally:
                os._exit(code)
        servers[pid] = listener.name
    for listener, sock in zip(listeners, sockets, strict=True):
        log.info("listening on port %s (%s)", sock.getsockname()[1], listener.name)
        sock.close()
    stop = run()
    failed = False
    try:
        while not stopping.wait(0.2):
            for pid, name in list(servers.items()):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    log.error("the %s listener stopped unexpectedly; stopping", name)
                    del servers[pid]
                    failed = True
            if failed:
                break
        log.info("stopping")
    finally:
        _stop_servers(list(servers))
        stop()
    return 1 if failed else 0


def _stop_servers(pids: list[int]) -> None:
    """SIGTERM each listener's server, wait for it to stop its workers, kill it past that."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    ends = time.monotonic() + STOP_SECONDS + 5
    for pid in pids:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > ends:
                log.error("a listener's server did not stop in time; killing it")
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def _native_threads() -> int:
    """Threads of this process, granian's own (Rust) threads included."""
    return len(os.listdir("/proc/self/task"))


class HttpServer:
    """Listeners served from threads of this process by granian's worker (one per listener).

    A server not closed is closed at exit: granian's threads must end before the interpreter
    does (one still finishing a connection then aborts the process).
    """

    def __init__(self, listeners: Sequence[Listener], threads: int = 4) -> None:
        self.listeners = list(listeners)
        self.sockets = [bind(listener.host, listener.port) for listener in listeners]
        self.threads = threads
        self.signals = [WorkerSignal() for _ in self.listeners]
        self.running: list[threading.Thread] = []
        self.baseline = 0

    @property
    def port(self) -> int:
        """The bound port of the first listener."""
        return next(iter(self.ports.values()))

    @property
    def ports(self) -> dict[str, int]:
        """The bound port of each listener (useful with port 0)."""
        return {
            listener.name: int(sock.getsockname()[1])
            for listener, sock in zip(self.listeners, self.sockets, strict=True)
        }

    def start_in_background(self, name: str) -> HttpServer:
        """Serve every listener from daemon threads (until `close` or the process ends)."""
        self.baseline = _native_threads()
        atexit.register(self.close)
        for index, listener in enumerate(self.listeners):
            ready = threading.Event()
            thread = threading.Thread(
                target=self._serve, args=(index, listener, ready), name=f"{name}-{index}",
                daemon=True,
            )  # fmt: skip
            thread.start()
            if not ready.wait(10):
                raise RuntimeError("the HTTP front did not start within 10 s")
            self.running.append(thread)
        return self

    def _serve(self, index: int, listener: Listener, ready: threading.Event) -> None:
        """granian's worker thread (as its free-threaded server runs one) for one listener."""
        holder = _NATIVE.SocketHolder(os.dup(self.sockets[index].fileno()), False, BACKLOG)
        ready.set()  # the socket listens already: connections queue until the worker takes them
        MTServer._spawn_rsgi_worker(
            1, self.signals[index], Guard(listener, self.threads), (None, holder), Loops.asyncio,
            RuntimeModes.st, 1, 512, 1, 30, listener.limits.connections, TaskImpl.asyncio,
            HTTPModes.http1, http1(listener.limits), None, False, None, None, NO_TLS, {},
            (None, None),
        )  # fmt: skip

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish the requests in hand and close every socket."""
        atexit.unregister(self.close)
        for stop in self.signals:
            stop.set()
        for thread in self.running:
            thread.join(timeout)
        for sock in self.sockets:
            sock.close()
        if self.running:  # granian's threads end a moment after its worker's
            ends = time.monotonic() + 1.0
            while _native_threads() > self.baseline and time.monotonic() < ends:
                time.sleep(0.02)


def start_in_background(listener: Listener, threads: int) -> HttpServer:
    """Serve one more listener from a daemon thread (refused in one line if its port is taken)."""
    check_listeners([listener])
    return HttpServer([listener], threads).start_in_background(listener.name)
