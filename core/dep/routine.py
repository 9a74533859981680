"""The routine `/session` and `/account` in as few steps as each database allows.

On PostgreSQL, `core.dep.auth.open_routine_session` would run five statements in a transaction
(BEGIN, the relaxed commit, the token's state, the nonce, the session, COMMIT: six round trips).
Here one statement, run alone (autocommit), does the same: data-modifying CTEs run exactly once
and together (PostgreSQL "WITH Queries", "Data-Modifying Statements in WITH"), and
`set_config(…, true)` relaxes the commit of the statement's own transaction. On SQLite, where a
statement costs no round trip, `rows` runs the same Core statements on the driver's connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import col

from core.models import DepNonce, DepSession, Token, TokenStatus, UTCDateTime


def _statement() -> sa.Select[Any]:
    """The statement, built once."""
    now = sa.bindparam("now", type_=UTCDateTime)
    live = (
        sa.select(col(Token.id))
        .where(
            col(Token.id) == sa.bindparam("token"),
            col(Token.status) == TokenStatus.ACTIVE,
            col(Token.expires_at) > now,
            col(Token.installed_at).is_not(None),
        )
        .cte("live")
    )
    nonce = (
        postgresql_insert(DepNonce)
        .from_select(
            ["consumer_key", "timestamp", "nonce", "seen_at"],
            sa.select(
                sa.bindparam("key", type_=sa.String),
                sa.bindparam("ts", type_=sa.BigInteger),
                sa.bindparam("nonce", type_=sa.String),
                now,
            ).select_from(live),
        )
        .on_conflict_do_nothing(index_elements=["consumer_key", "timestamp", "nonce"])
        .returning(col(DepNonce.id))
        .cte("first_use")
    )
    opened = (
        sa.insert(DepSession)
        .from_select(
            ["key_hash", "token_id", "created_at", "expires_at"],
            sa.select(
                sa.bindparam("key_hash", type_=sa.String),
                sa.bindparam("token", type_=sa.Integer),
                now,
                sa.bindparam("expires", type_=UTCDateTime),
            ).select_from(nonce),
        )
        .returning(col(DepSession.token_id))
        .cte("opened")
    )
    seen = (
        sa.update(Token)
        .where(
            col(Token.id).in_(sa.select(opened.c.token_id)),
            sa.or_(
                col(Token.last_used_at).is_(None),
                col(Token.last_used_at) < sa.bindparam("seen_before", type_=UTCDateTime),
            ),
        )
        .values(last_used_at=now, last_used_from=sa.bindparam("client", type_=sa.String))
        .returning(col(Token.id))
        .cte("seen")
    )
    relaxed = sa.func.set_config("synchronous_commit", "off", True)
    return (
        sa.select(
            sa.select(sa.func.count()).select_from(live).scalar_subquery(),
            sa.select(sa.func.count()).select_from(opened).scalar_subquery(),
        )
        .add_cte(seen)
        .where(relaxed == "off")
    )


_OPEN = _statement()


def open_in_one_statement(
    connection: sa.Connection,
    token_id: int,
    request_key: tuple[str, int, str],
    session: tuple[str, datetime],
    now: datetime,
    seen_before: datetime,
    client: str,
) -> bool | None:
    """Record the nonce and the session of an active, installed token, and `last seen` when
    older than `seen_before`: True; False for a nonce used before; None, having written
    nothing, for any other token. `connection` runs each statement alone (autocommit)."""
    consumer_key, timestamp, nonce = request_key
    key_hash, expires = session
    row = connection.execute(
        _OPEN,
        {
            "token": token_id,
            "now": now,
            "key": consumer_key,
            "ts": timestamp,
            "nonce": nonce,
            "key_hash": key_hash,
            "expires": expires,
            "seen_before": seen_before,
            "client": client[:64],
        },
    ).one()
    routine, opened = row[0], row[1]
    return bool(opened) if routine else None


class _OnDriver:
    """A Core statement compiled once for SQLite, run on the driver's own connection inside the
    caller's transaction: SQLAlchemy's conversions of each value, without its per-execution
    work (2 µs a statement where `Connection.execute` takes 17 µs, bench/README.md)."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect) -> None:
        compiled = cast(SQLCompiler, cast(sa.ClauseElement, statement).compile(dialect=dialect))
        self.sql = compiled.string
        self.fixed = "POSTCOMPILE" not in self.sql  # an `IN` list is rendered per execution
        self.binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()
        ]
        columns = statement.selected_columns if isinstance(statement, sa.Select) else ()
        self.results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def rows(self, connection: sa.Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of the statement, its values converted as `Connection.execute` would."""
        values = [
            params[name] if to_db is None else to_db(params[name]) for name, to_db in self.binds
        ]
        driver = cast(sqlite3.Connection, connection.connection.driver_connection)
        found = driver.execute(self.sql, values).fetchall()
        if not any(self.results):
            return found
        return [
            tuple(
                value if convert is None else convert(value)
                for convert, value in zip(self.results, row, strict=True)
            )
            for row in found
        ]


_PREPARED: dict[sa.Executable, _OnDriver] = {}  # by statement, which it holds


def rows(
    connection: sa.Connection, statement: sa.Executable, params: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """The rows of a statement built once at import (on SQLite, run on the driver's connection;
    kept, so a statement built per call would grow this cache)."""
    if connection.dialect.name == "sqlite":
        prepared = _PREPARED.get(statement)
        if prepared is None:
            prepared = _PREPARED[statement] = _OnDriver(statement, connection.dialect)
        if prepared.fixed:
            return prepared.rows(connection, params)
    result = connection.execute(statement, params)
    return result.all() if result.returns_rows else []


def first(
    connection: sa.Connection, statement: sa.Executable, params: Mapping[str, Any]
) -> Sequence[Any] | None:
    """The first row of `rows`, or None."""
    found = rows(connection, statement, params)
    return found[0] if found else None
