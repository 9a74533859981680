"""What every adapter needs at hand: settings, database engine, vault and the clock."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import sqlalchemy as sa
from sqlmodel import Session

from bot.apple.client import AppleClient
from bot.mdm.installer import installer_for
from core import db
from core.apple.api import AppleApi
from core.connections.links import Installer
from core.errors import ConfigError
from core.settings import Settings
from core.vault import Vault, open_vault


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
