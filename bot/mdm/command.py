"""The `command` connection: an operator's program installs the token (like certbot's deploy hooks).

It runs without a shell; the token file's path and the server's name are in its environment,
and exit status 0 means installed. Only a minimal environment is passed: never mdmbot's secrets.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from core.connections.links import ConnectionSpec, InstallError, TokenPush

PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def install(spec: ConnectionSpec, push: TokenPush, timeout: float) -> None:
    """Write the token to a private file and run the command with its path."""
    try:
        argv = shlex.split(spec.command or "")
    except ValueError as exc:
        raise InstallError(f"The install command cannot be parsed: {exc}.") from exc
    if not argv:
        raise InstallError("The install command is empty.")
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
            done = subprocess.run(
                argv, env=env, cwd=scratch, capture_output=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise InstallError(f"Cannot run the install command {program}: not found.") from exc
        except PermissionError as exc:
            raise InstallError(f"Cannot run the install command {program}: not allowed.") from exc
        except subprocess.TimeoutExpired as exc:
            raise InstallError(f"The install command {program} ran over {timeout:g} s.") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        last = f": {said[-1][:200]}" if said else ""
        raise InstallError(f"The install command {program} exited {done.returncode}{last}.")
