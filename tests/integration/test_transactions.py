"""How `core.db.transaction` begins and ends: reads on PostgreSQL without BEGIN and ROLLBACK, and
a pooled connection a read used still gives the next writer a real transaction."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from core import db


def test_a_read_on_postgresql_runs_each_statement_on_its_own(engine: sa.Engine) -> None:
    """Two `now()` a moment apart differ outside a transaction block (PostgreSQL's now() is the
    transaction's start), so no BEGIN was sent; a writer's stay one transaction."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads keep one snapshot (a deferred transaction)")
    with db.transaction(engine, readonly=True) as connection:
        first = connection.exec_driver_sql("SELECT now()").scalar_one()
        time.sleep(0.01)
        assert connection.exec_driver_sql("SELECT now()").scalar_one() > first
    with db.transaction(engine) as connection:
        first = connection.exec_driver_sql("SELECT now()").scalar_one()
        time.sleep(0.01)
        assert connection.exec_driver_sql("SELECT now()").scalar_one() == first


def test_a_writer_after_a_read_on_the_same_connection_is_rolled_back_on_error(
    engine: sa.Engine,
) -> None:
    with db.transaction(engine, readonly=True) as connection:
        used = connection.connection.dbapi_connection
        assert connection.exec_driver_sql("SELECT count(*) FROM processedevent").scalar() == 0
    with pytest.raises(RuntimeError), db.transaction(engine) as connection:
        assert connection.connection.dbapi_connection is used  # the pooled one, reset
        insert = "INSERT INTO processedevent (event_id, received_at) VALUES (:id, :at)"
        connection.execute(sa.text(insert), {"id": "Ev1", "at": datetime.now(UTC)})
        raise RuntimeError("the writer fails after its insert")
    with db.transaction(engine, readonly=True) as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM processedevent").scalar() == 0


def test_a_pooled_postgresql_connection_closed_while_idle_is_replaced(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ended the pooled connection (a restart, an idle timeout): after IDLE_PING
    seconds unused it is pinged before use, and the next transaction runs on a new one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to close a connection")
    with db.transaction(engine, readonly=True) as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    other = sa.create_engine(engine.url)
    with other.connect() as admin:
        assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar()
    other.dispose()
    monkeypatch.setattr(db, "IDLE_PING", 0.0)
    with db.transaction(engine, readonly=True) as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
