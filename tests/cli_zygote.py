"""A warm `mdmbot` for the tests: one process per test worker imports the command line once and
forks a child per command; the client side (`tests.processes.run_cli`) waits for it like
`subprocess.run`.

Each child is a process of its own, as `mdmbot` started from a shell is: it gets the caller's
stdin, stdout and stderr (passed over a Unix socket), environment, working directory and umask,
runs `bot.cli.main.main(argv)` as the console script does, runs the exit handlers and exits with
the command's status. Only the interpreter start-up and the imports (about a second of CPU per
command) are shared. Run as a script with `-P` (nothing from the working directory on sys.path).
"""

from __future__ import annotations

import array
import atexit
import io
import json
import os
import socket
import sys
import traceback

FDS = 3  # stdin, stdout, stderr
HEADER = 1 << 20


def _stdio(fd: int, template: io.TextIOWrapper, *, write: bool) -> io.TextIOWrapper:
    """A text stream on `fd` as Python's start-up makes it (line-buffered on a terminal)."""
    raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    tty = raw.isatty()
    buffered: io.BufferedIOBase
    buffered = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffered,
        encoding=template.encoding,
        errors=template.errors,
        line_buffering=write and tty,
        write_through=False,
    )


def _exit_status(exc: SystemExit) -> int:
    """The status Python exits with for `SystemExit(code)`."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _child(conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """Become `mdmbot ARGV` with the caller's stdio, environment, directory and umask; exit."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(str(request["cwd"]))
    os.umask(int(str(request["umask"])))
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
    sys.argv = ["mdmbot", *argv]
    sys.stdin = _stdio(0, sys.__stdin__, write=False)  # type: ignore[arg-type]
    sys.stdout = _stdio(1, sys.__stdout__, write=True)  # type: ignore[arg-type]
    sys.stderr = _stdio(2, sys.__stderr__, write=True)  # type: ignore[arg-type]
    conn.sendall(f"{os.getpid()}\n".encode())
    from bot.cli.main import main

    try:
        status = int(main(argv)) & 0xFF
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            status = 120  # what Python exits with when flushing stdout at exit fails
    conn.sendall(f"{status}\n".encode())
    os._exit(status)


def _serve(path: str) -> None:
    """Accept one command per connection; fork a child for it; reap children; stop when the
    test worker that started this process is gone."""
    import bot.cli.main  # noqa: F401  (what every child would import first)

    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(1.0)
    print("ready", flush=True)
    while os.getppid() == parent:
        _reap()
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        message, fds, _, _ = socket.recv_fds(conn, HEADER, FDS)
        if len(fds) != FDS:
            conn.close()
            continue
        if os.fork() == 0:
            server.close()
            try:
                _child(conn, json.loads(message), fds)
            finally:
                os._exit(70)
        conn.close()
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    """Collect the exit statuses of finished children."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def pass_fds(conn: socket.socket, message: bytes, fds: list[int]) -> None:
    """Send a request with its file descriptors."""
    conn.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


if __name__ == "__main__":
    # Signal dispositions stay the test worker's, as they would across exec: a child of this
    # process handles Ctrl-C (or ignores it) exactly as `mdmbot` started by the test would.
    try:
        _serve(sys.argv[1])
    except KeyboardInterrupt:  # a ^C in the test run stops it with pytest
        pass
