"""Engine, sessions and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlmodel import Session

MIGRATIONS = Path(__file__).with_name("migrations")
READONLY = "mdmbot_readonly"
MIGRATION_LOCK = 0x6D646D62


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and writers that wait for each other."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
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
        readonly = connection.get_execution_options().get(READONLY, False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def unit_of_work(engine: sa.Engine, *, readonly: bool = False) -> Iterator[Session]:
    """A session committed on success and rolled back on any error.

    A read-only unit of work does not queue behind SQLite writers (it starts a deferred
    transaction) and is rolled back at the end.
    """
    bind = _readonly(engine) if readonly else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            if readonly:
                session.rollback()
            else:
                session.commit()
        except BaseException:
            session.rollback()
            raise


def _readonly(engine: sa.Engine) -> sa.Engine:
    """The engine's read-only variant, made once (building one costs as much as a query)."""
    reader: sa.Engine | None = getattr(engine, "_mdmbot_readonly", None)
    if reader is None:
        reader = engine.execution_options(**{READONLY: True})
        setattr(engine, "_mdmbot_readonly", reader)  # noqa: B010
    return reader


def alembic_config(url: str) -> Config:
    """The Alembic configuration for the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Run every pending migration; processes starting together take turns."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
