"""SQLite's write-ahead log copied into the database by a thread of `serve`, not by a request.

SQLite copies the log back when a commit leaves it over 1,000 pages ("wal_autocheckpoint"): that
commit then waits for the disk twice (synchronous=NORMAL syncs at checkpoints), 5 ms here, while
its request waits and, on a DEP `/session`, while it holds the writers' turn. SQLite leaves the
checkpoints to the application when it asks ("Application-Initiated Checkpoints",
sqlite.org/wal.html): the workers' connections raise the threshold to `SAFETY_PAGES`, a bound
for when this thread falls behind, and this thread checkpoints every `INTERVAL` seconds, in
PASSIVE mode (it waits for no reader or writer).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

log = logging.getLogger("mdmbot.checkpoints")
INTERVAL = 0.05
SAFETY_PAGES = 10_000  # 40 MB of log at SQLite's default page size


def leave_to_thread(engine: sa.Engine) -> None:
    """Connections the engine opens from now on (in forked workers too) checkpoint only past
    `SAFETY_PAGES`."""

    @event.listens_for(engine, "connect")
    def _raise_threshold(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={SAFETY_PAGES}")


def start(database: Path, interval: float = INTERVAL) -> Callable[[], None]:
    """Checkpoint `database` from a thread until the returned function is called."""
    stopped = threading.Event()

    def run() -> None:
        try:
            connection = sqlite3.connect(database, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:  # the workers still checkpoint past SAFETY_PAGES
            log.warning("no checkpoints of %s from the serving process: %s", database, exc)
            return
        failed = False
        try:
            while not stopped.wait(interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failed = False
                except sqlite3.Error as exc:  # logged once until one succeeds again
                    if not failed:
                        log.warning("checkpoint of %s failed: %s", database, exc)
                    failed = True
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="mdmbot-checkpoints", daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join(timeout=5)

    return stop
