"""Engine, sessions and migrations."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlmodel import Session

from core.errors import ConfigError
from core.files import private_database, private_directory

MIGRATIONS = Path(__file__).with_name("migrations")
READONLY = "mdmbot_readonly"
RELAXED = "mdmbot_relaxed"  # commit without waiting for the disk (bench/README.md, "Durability")
MIGRATION_LOCK = 0x6D646D62
SUPPORTED_DRIVERS = ("sqlite+pysqlite", "postgresql+psycopg", "postgresql+psycopg2")


def parse_url(url: str) -> sa.URL:
    """The database URL, refused in one line unless it names a supported, installed driver."""
    example = "postgresql+psycopg://USER@HOST/mdmbot or sqlite:////PATH/mdmbot.db"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"MDMBOT_DATABASE_URL is not a database URL; use {example}.") from exc
    try:
        name = f"{parsed.get_backend_name()}+{parsed.get_driver_name()}"
    except sa.exc.NoSuchModuleError:
        name = parsed.drivername
    if name not in SUPPORTED_DRIVERS:
        raise ConfigError(
            f"MDMBOT_DATABASE_URL names an unsupported database ({name}); mdmbot runs on "
            f"PostgreSQL or SQLite: use {example}."
        )
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        raise ConfigError(
            f"MDMBOT_DATABASE_URL needs the {name} driver, which is not installed; use {example}."
        ) from exc
    return parsed


def _sqlite_file(url: sa.URL) -> Path | None:
    """The SQLite database file of `url` (None for other databases and in-memory SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and writers that wait for each other."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)

        @event.listens_for(engine, "begin")
        def _on_pg_begin(connection: sa.Connection) -> None:
            if connection.get_execution_options().get(RELAXED, False):
                # PostgreSQL: a commit returns before its WAL record reaches the disk.
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

        return engine
    database = _sqlite_file(parsed)
    if database is not None:
        private_directory(database.parent, "The database directory")
        private_database(database)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        options = connection.get_execution_options()
        if options.get(READONLY, False):
            connection.exec_driver_sql("BEGIN")
            return
        # SQLite: the level can only change outside a transaction; WAL with NORMAL syncs at
        # checkpoints, FULL at every commit. Set only when it differs (a pooled connection).
        level = "NORMAL" if options.get(RELAXED, False) else "FULL"
        info = connection.connection.info
        if info.get("synchronous") != level:
            connection.exec_driver_sql(f"PRAGMA synchronous={level}")
            info["synchronous"] = level
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class WriterTurns:
    """Writers of one SQLite file take turns, across threads and processes, woken on release.

    SQLite allows one writer at a time, and a writer waiting in its busy handler sleeps in steps
    of up to 100 ms ("sqliteDefaultBusyCallback"); a lock file held with `flock` wakes the next
    writer as soon as the last one is done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.threads = threading.Lock()
        self.fd = -1
        self.pid = 0

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            if self.pid != os.getpid():
                # flock: a descriptor inherited across fork shares the parent's lock
                if self.fd >= 0:
                    os.close(self.fd)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self.pid = os.getpid()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()


def writer_turns(engine: sa.Engine) -> AbstractContextManager[object]:
    """What writers hold around a write transaction: turns on SQLite, nothing on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    database = _sqlite_file(engine.url)
    if database is None:
        return threading.Lock()
    return WriterTurns(database.with_name(database.name + "-writers"))


@contextmanager
def unit_of_work(
    engine: sa.Engine, *, readonly: bool = False, durable: bool = True
) -> Iterator[Session]:
    """A session committed on success and rolled back on any error.

    A read-only unit of work does not queue behind SQLite writers (it starts a deferred
    transaction) and is rolled back at the end. A unit of work that is not `durable` commits
    without waiting for the disk: a power cut (not a crash of mdmbot) may lose it.
    """
    with Session(_bind(engine, readonly, durable), expire_on_commit=False) as session:
        try:
            yield session
            if readonly:
                session.rollback()
            else:
                session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def transaction(
    engine: sa.Engine, *, readonly: bool = False, durable: bool = True
) -> Iterator[sa.Connection]:
    """`unit_of_work` for Core statements only: a connection, without the ORM's session."""
    with _bind(engine, readonly, durable).connect() as connection:
        with connection.begin() as began:
            yield connection
            if readonly:
                began.rollback()


def connection_of(db: Session | sa.Connection) -> sa.Connection:
    """The connection to run Core statements on: a session's (after a flush), or `db` itself."""
    if isinstance(db, sa.Connection):
        return db
    db.flush()
    return db.connection()


def _bind(engine: sa.Engine, readonly: bool, durable: bool) -> sa.Engine:
    """The engine whose transactions begin as asked."""
    if readonly:
        return _variant(engine, READONLY)
    return engine if durable else _variant(engine, RELAXED)


def _variant(engine: sa.Engine, option: str) -> sa.Engine:
    """The engine with one option set, made once (building one costs as much as a query)."""
    variant: sa.Engine | None = getattr(engine, "_" + option, None)
    if variant is None:
        variant = engine.execution_options(**{option: True})
        setattr(engine, "_" + option, variant)
    return variant


def alembic_config(url: str) -> Config:
    """The Alembic configuration for the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def schema_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction for schema changes; processes starting together take turns."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw: Any = connection.connection.driver_connection
        if sqlite:
            # SQLite: rebuilding a table that others refer to needs foreign keys off, and the
            # pragma is a no-op inside a transaction ("Making Other Kinds Of Table Schema
            # Changes"); they are checked before the commit instead.
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise ConfigError(
                        "The schema change left rows that refer to missing ones; nothing was "
                        "changed."
                    )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(url: str) -> None:
    """Run every pending migration; processes starting together take turns."""
    engine = make_engine(url)
    try:
        with schema_transaction(engine) as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def schema_revisions(url: str) -> tuple[str | None, str, bool]:
    """The schema revision (None: no schema), the packaged head, and whether it is known."""
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None
    database = _sqlite_file(parse_url(url))
    if database is not None and not database.exists():
        return None, head, True
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    try:
        known = current is None or script.get_revision(current) is not None
    except CommandError:
        known = False
    return current, head, known
