"""Engine, sessions and migrations."""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from core.errors import ConfigError
from core.files import private_database, private_directory

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
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


def sqlite_file(url: sa.URL) -> Path | None:
    """The SQLite database file of `url` (None for other databases and in-memory SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and transactions begun as asked."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, pool_size=10, max_overflow=20)
        engine.dialect.do_begin = _begin_postgresql  # type: ignore[method-assign]
        _ping_when_idle(engine)
        event.listen(engine, "connect", _number)
        return engine
    database = sqlite_file(parsed)
    if database is not None:
        private_directory(database.parent, "The database directory")
        private_database(database)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        _number(dbapi_connection, record)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # Transactions begin in the dialect rather than in a "begin" event: any engine event makes
    # SQLAlchemy dispatch four more events around every statement (bench/README.md).
    engine.dialect.do_begin = _begin_sqlite  # type: ignore[method-assign]
    return engine


IDLE_PING = 5.0  # seconds a pooled PostgreSQL connection sits unused before it is pinged


def _ping_when_idle(engine: sa.Engine) -> None:
    """Ping a pooled connection before use only when it sat idle (a server restart or an idle
    timeout may have closed it): `pool_pre_ping` would add a round trip to every request."""
    dialect, error = engine.dialect, engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine.pool, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_from = record.info.get("idle_from")
        if idle_from is None or time.monotonic() - idle_from < IDLE_PING:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except error as exc:  # the pool replaces the connection and checks out again
            raise sa.exc.DisconnectionError() from exc


WRITE, RELAXED, READ, ALONE = "write", "relaxed", "read", "alone"
_BEGIN: ContextVar[str] = ContextVar("mdmbot_begin", default=WRITE)


def _begin_sqlite(dbapi_connection: Any) -> None:
    """Begin as `_BEGIN` says: writers take the write lock at once, readers a snapshot."""
    mode = _BEGIN.get()
    info = dbapi_connection.info
    info["read_from"] = None
    if mode == READ:
        dbapi_connection.execute("BEGIN")
        info["read_from"] = dbapi_connection.total_changes
    if mode in (READ, ALONE):  # ALONE: SQLite's own autocommit, each statement on its own
        return
    # SQLite: the level can only change outside a transaction; WAL with NORMAL syncs at
    # checkpoints, FULL at every commit. Set only when it differs (a pooled connection).
    level = "NORMAL" if mode == RELAXED else "FULL"
    if info.get("synchronous") != level:
        dbapi_connection.execute(f"PRAGMA synchronous={level}")
        info["synchronous"] = level
    dbapi_connection.execute("BEGIN IMMEDIATE")


_CONNECTIONS = itertools.count(1)


def _number(_dbapi_connection: Any, record: Any) -> None:
    """Give each new database connection of this process a number of its own."""
    record.info["number"] = next(_CONNECTIONS)


def data_marker(connection: sa.Connection) -> Hashable | None:
    """A value that repeats on a connection only while the data it reads is unchanged (None when
    it cannot tell: a transaction that writes).

    SQLite: "PRAGMA data_version" changes when another connection commits, and total_changes
    counts this connection's own changes. PostgreSQL: two equal snapshots (pg_current_snapshot)
    see the same committed transactions; read-only transactions run each statement alone.
    """
    info, raw = connection.connection.info, connection.connection.driver_connection
    if "number" not in info:  # an engine `make_engine` did not make
        return None
    if connection.dialect.name == "sqlite":
        changes = raw.total_changes  # type: ignore[union-attr]
        if not connection.in_transaction() or info.get("read_from") != changes:
            return None
        version = raw.execute("PRAGMA data_version").fetchone()[0]  # type: ignore[union-attr]
        return info["number"], version, changes
    if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        return None
    return info["number"], connection.exec_driver_sql("SELECT pg_current_snapshot()").scalar()


def _begin_postgresql(dbapi_connection: Any) -> None:
    """The driver begins on the first statement; a relaxed writer does not wait for its WAL."""
    if _BEGIN.get() == RELAXED:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


@contextmanager
def _begun_as(mode: str) -> Iterator[None]:
    """Transactions begun inside the block begin as `mode` (the default is `WRITE`)."""
    token = _BEGIN.set(mode)
    try:
        yield
    finally:
        _BEGIN.reset(token)


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
    database = sqlite_file(engine.url)
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
    with Session(engine, expire_on_commit=False) as session:
        try:
            mode = _mode(readonly, durable)
            if mode != WRITE:  # a writer begins (and takes SQLite's write lock) at its first use
                with _begun_as(mode):
                    session.connection()
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
    """`unit_of_work` for Core statements only: a connection, without the ORM's session.

    On PostgreSQL a read-only one runs each statement on its own (autocommit): at READ COMMITTED
    each statement takes its own snapshot in a transaction too, and the BEGIN and ROLLBACK would
    be two more round trips to the server (bench/README.md, issue 35).
    """
    if readonly and engine.dialect.name == "postgresql":
        with statements_alone(engine) as connection:
            yield connection
        return
    with engine.connect() as connection:
        with _begun_as(_mode(readonly, durable)):
            began = connection.begin()
        with began:
            yield connection
            if readonly:
                began.rollback()


@contextmanager
def statements_alone(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection on which each statement is a transaction of its own, for reads: PostgreSQL's
    autocommit; SQLite's, no BEGIN or ROLLBACK (nor for any connection used in the block)."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection, _begun_as(ALONE):
        yield connection if sqlite else connection.execution_options(isolation_level="AUTOCOMMIT")


def connection_of(db: Session | sa.Connection) -> sa.Connection:
    """The connection to run Core statements on: a session's (after a flush), or `db` itself."""
    if isinstance(db, sa.Connection):
        return db
    db.flush()
    return db.connection()


def _mode(readonly: bool, durable: bool) -> str:
    """How a transaction asked for this way begins."""
    if readonly:
        return READ
    return WRITE if durable else RELAXED


def alembic_config(url: str) -> Config:
    """The Alembic configuration for the packaged migrations."""
    from alembic.config import Config  # Alembic loads only where a schema may change

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
            if sqlite and not connection.invalidated:  # an interrupt closes the connection
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(url: str) -> None:
    """Run every pending migration; processes starting together take turns."""
    from alembic import command

    engine = make_engine(url)
    try:
        with schema_transaction(engine) as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def packaged_head() -> str:
    """The newest migration's revision, from its file name (`NNNN_name.py` holds revision
    "NNNN"; tests/integration/test_schema_check.py checks it against Alembic's reading)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def at_head(url: str) -> bool:
    """Whether the schema is at this mdmbot's head: one query, without loading Alembic (the
    usual case at start-up). False also when there is no schema, or it cannot be read."""
    database = sqlite_file(parse_url(url))
    if database is not None and not database.exists():
        return False
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()
    return [tuple(row) for row in found] == [(packaged_head(),)]


def schema_revisions(url: str) -> tuple[str | None, str, bool]:
    """The schema revision (None: no schema), the packaged head, and whether it is known."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None
    database = sqlite_file(parse_url(url))
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
