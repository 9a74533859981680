"""What every adapter needs at hand: settings, database engine, vault and the clock."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from bot.apple.client import AppleClient
from bot.mdm.installer import installer_for
from core import db
from core.apple.api import AppleApi
from core.connections.links import Installer
from core.errors import ConfigError
from core.settings import Settings
from core.vault import Vault, open_vault

log = logging.getLogger("mdmbot.checkpoints")
CHECKPOINT_INTERVAL = 0.05
CHECKPOINT_SAFETY_PAGES = 10_000  # 40 MB of log at SQLite's default page size


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class AppContext:
    """Lazily built shared resources of one mdmbot process."""

    settings: Settings
    clock: Callable[[], datetime] = field(default=utc_now)

    @cached_property
    def engine(self) -> sa.Engine:
        """The database engine (migrations are run by `prepare_database`)."""
        return db.make_engine(self.settings.database_url)

    @cached_property
    def vault(self) -> Vault:
        """The vault that encrypts token secrets at rest; resolve it outside a unit of work."""
        with self.unit_of_work() as session:
            return open_vault(
                session, self.settings.mdmbot_secret_key, self.settings.mdmbot_data_dir, self.now()
            )

    @cached_property
    def installer(self) -> Installer:
        """What installs tokens into MDM servers (bot/mdm), handed to adapters through here."""
        return installer_for(self.settings)

    @cached_property
    def apple(self) -> AppleApi:
        """Apple's School Manager / Business API (bot/apple) in Apple mode; ConfigError if the
        API account's settings are missing."""
        return AppleClient(self.settings)

    @property
    def holder(self) -> str:
        """This process's name on the install claims it takes."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def prepare_database(self) -> None:
        """Bring the schema up to date (only `serve`, `scheduler` and `db upgrade` migrate)."""
        if not db.at_head(self.settings.database_url):
            self._check_schema(migrate=True)
            db.upgrade(self.settings.database_url)
        _ = self.vault  # a lost or wrong key stops start-up here, not in a listener

    def check_database(self) -> None:
        """Refuse to work on a database whose schema is not this version's; migrate nothing."""
        self._check_schema(migrate=False)

    def _check_schema(self, *, migrate: bool) -> None:
        if db.at_head(self.settings.database_url):
            return
        current, head, known = db.schema_revisions(self.settings.database_url)
        if current == head or (migrate and known):
            return
        if current is None:
            raise ConfigError(
                "The database has no mdmbot tables yet; create them with `mdmbot db upgrade` "
                "(`mdmbot serve` does it too)."
            )
        if not known:
            raise ConfigError(
                f"The database schema (revision {current}) is newer than this mdmbot "
                f"(revision {head}); upgrade mdmbot."
            )
        raise ConfigError(
            f"The database schema is behind (revision {current}; this mdmbot needs {head}); "
            "run `mdmbot db upgrade`."
        )

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False, durable: bool = True) -> Iterator[Session]:
        """A database session committed on success (or only reading)."""
        with db.unit_of_work(self.engine, readonly=readonly, durable=durable) as session:
            yield session

    @contextmanager
    def transaction(
        self, *, readonly: bool = False, durable: bool = True
    ) -> Iterator[sa.Connection]:
        """A database connection in one transaction, for Core statements only."""
        with db.transaction(self.engine, readonly=readonly, durable=durable) as connection:
            yield connection

    @contextmanager
    def statements_alone(self) -> Iterator[sa.Connection]:
        """A database connection on which each statement is a transaction of its own."""
        with db.statements_alone(self.engine) as connection:
            yield connection

    def now(self) -> datetime:
        """The current time from this context's clock."""
        return self.clock()


# SQLite copies its write-ahead log back into the database when a commit leaves it over 1,000
# pages ("wal_autocheckpoint"): that commit then waits for two disk syncs (synchronous=NORMAL
# syncs at checkpoints) while its request waits, and a DEP `/session` holds the writers' turn.
# SQLite leaves checkpoints to the application when asked ("Application-Initiated Checkpoints",
# sqlite.org/wal.html): `serve` checkpoints from a thread (PASSIVE: it waits for no reader or
# writer), and its workers' connections only past CHECKPOINT_SAFETY_PAGES, should it fall behind.
def leave_checkpoints_to_thread(engine: sa.Engine) -> None:
    """Connections the engine opens from now on (in forked workers too) checkpoint only past
    `CHECKPOINT_SAFETY_PAGES`."""

    @event.listens_for(engine, "connect")
    def _raise_threshold(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_SAFETY_PAGES}")


def checkpoint_in_background(
    database: Path, interval: float = CHECKPOINT_INTERVAL
) -> Callable[[], None]:
    """Checkpoint `database` from a thread until the returned function is called."""
    stopped = threading.Event()

    def run() -> None:
        try:
            connection = sqlite3.connect(database, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:  # the workers still checkpoint past CHECKPOINT_SAFETY_PAGES
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
