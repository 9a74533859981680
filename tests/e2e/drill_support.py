"""Shared by the backup drill and the key rotation tests: serving processes and DEP load."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.dep_client import Creds, call, oauth_header
from tests.processes import ServeProcess, free_port, run_cli


class DepServe(ServeProcess):
    """`mdmbot serve --http` that also serves the device assignment service (and sweeps)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.dep_port = free_port()
        self.dep_url = f"http://127.0.0.1:{self.dep_port}"
        super().__init__(env, log_path, "--dep-host", "127.0.0.1", "--dep-port", str(self.dep_port))

    def swept(self) -> bool:
        """Whether this process finished a sweep."""
        return self.metric("mdmbot_scheduler_last_sweep_timestamp_seconds") > 0


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one `mdmbot` command to its end."""
    return run_cli(list(args), env=env, timeout=120)


def opens(base: str, creds: Creds) -> int:
    """The status of GET /session signed with `creds`."""
    header = oauth_header(creds, f"{base}/session")
    return call(f"{base}/session", {"Authorization": header})[0]


class Load:
    """MDM servers opening sessions over and over until stopped."""

    def __init__(self, bases: list[str], creds: list[Creds]) -> None:
        self.answers: list[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(base, creds), daemon=True) for base in bases
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, base: str, creds: list[Creds]) -> None:
        while not self._stop.is_set():
            for one in creds:
                self.answers.append(opens(base, one))

    def stop(self) -> list[int]:
        """Stop and return every status seen."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.answers
