"""The `command` connection: an operator's program installs the token (like certbot's deploy hooks).

It runs without a shell, in a new private directory that holds only the token file (removed
afterwards); the file's path and the server's name are in its environment, and exit status 0
means installed. Only a minimal environment is passed: never mdmbot's secrets. It runs in its
own process group, which is killed when it exits or overruns, so nothing it started outlives it;
of its output only the last MAX_OUTPUT bytes are kept, for its last line.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from core.connections.links import ConnectionSpec, InstallError, TokenPush

PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
MAX_OUTPUT = 16 * 1024
GRACE = 5.0  # seconds past the timeout for the killed process group to be reaped


def _argv(spec: ConnectionSpec) -> list[str]:
    try:
        argv = shlex.split(spec.command or "")
    except ValueError as exc:
        raise InstallError(f"The install command cannot be parsed: {exc}.") from exc
    if not argv:
        raise InstallError("The install command is empty.")
    return argv


def check(spec: ConnectionSpec) -> ConnectionSpec:
    """The connection with its program as an absolute path; InstallError when it cannot run."""
    argv = _argv(spec)
    program = argv[0]
    if "/" in program:
        found: str | None = str(Path(program).expanduser().absolute())
    else:
        found = shutil.which(program)
    if found is None or not Path(found).is_file():
        raise InstallError(f"The install command {program} does not exist (--mdm-command).")
    if not os.access(found, os.X_OK):
        raise InstallError(f"The install command {program} is not executable (--mdm-command).")
    return replace(spec, command=shlex.join([found, *argv[1:]]))


def install(spec: ConnectionSpec, push: TokenPush, timeout: float) -> None:
    """Write the token to a private file and run the command with its path."""
    argv = _argv(spec)
    program = Path(argv[0]).name
    with tempfile.TemporaryDirectory(prefix="mdmbot-install-") as scratch:
        token_file = Path(scratch) / push.filename
        token_file.touch(mode=0o600)
        token_file.write_bytes(push.content)
        env = {name: os.environ[name] for name in PASSED if name in os.environ}
        env.update(
            MDMBOT_TOKEN_FILE=str(token_file),
            MDMBOT_TOKEN_FILENAME=push.filename,
            MDMBOT_SERVER_NAME=push.server_name,
        )
        try:
            child = subprocess.Popen(
                argv, env=env, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise InstallError(f"Cannot run the install command {program}: not found.") from exc
        except PermissionError as exc:
            raise InstallError(f"Cannot run the install command {program}: not allowed.") from exc
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InstallError(f"Cannot run the install command {program}: {reason}.") from exc
        try:
            output = _collect(child, time.monotonic() + timeout)
        finally:
            _end(child)
    if output is None:
        raise InstallError(f"The install command {program} ran over {timeout:g} s.")
    if child.returncode != 0:
        said = output.decode("utf-8", "replace").strip().splitlines()
        last = "".join(c for c in said[-1] if c.isprintable())[:200] if said else ""
        raise InstallError(
            f"The install command {program} exited {child.returncode}{': ' + last if last else ''}."
        )


def _collect(child: subprocess.Popen[bytes], deadline: float) -> bytes | None:
    """The tail of the child's output once it exits; None when it overran the deadline."""
    assert child.stdout is not None
    fd, kept = child.stdout.fileno(), bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        chunk = os.read(fd, 65536) if ready else b""
        kept += chunk
        del kept[:-MAX_OUTPUT]
        if (ready and not chunk) or child.poll() is not None:
            break
    _kill_group(child)  # what it left running would hold the pipe open
    while select.select([fd], [], [], 0)[0] and (chunk := os.read(fd, 65536)):
        kept += chunk
        del kept[:-MAX_OUTPUT]
    child.wait()
    return bytes(kept)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _end(child: subprocess.Popen[bytes]) -> None:
    """Kill whatever of the process group is left and reap the child."""
    _kill_group(child)
    try:
        child.wait(GRACE)
    except subprocess.TimeoutExpired:
        pass
    if child.stdout is not None:
        child.stdout.close()
