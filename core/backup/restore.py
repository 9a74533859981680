"""`mdmbot restore`: every check first, then one transaction into an empty database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import db
from core.backup.archive import BackupReader, Manifest, TableEntry
from core.backup.snapshot import tables
from core.errors import ConfigError, InvalidInput
from core.models import KeyCheck
from core.progress import Progress, Tally
from core.vault import Vault

CHUNK_ROWS = 5000
VERSION_TABLE = "alembic_version"
OWN_TABLES = frozenset({t.name for t in tables()} | {VERSION_TABLE})
UPGRADE_WRITES = frozenset({VERSION_TABLE, KeyCheck.__tablename__})  # no secret depends on them


def restore_backup(
    url: str,
    keys: tuple[list[bytes], str] | None,
    path: Path,
    *,
    force: bool,
    progress: Progress | None = None,
) -> Manifest:
    """Restore the backup at `path` into the database at `url`; refusals write nothing."""
    reader = BackupReader(path)
    try:
        manifest = reader.manifest
        if keys is None:
            raise ConfigError(
                f"No secret key is configured: put the key this backup needs "
                f"({manifest.key_id}) in MDMBOT_SECRET_KEY or in the data directory's "
                "secret.key; nothing was restored."
            )
        key = reader.opening_key(Vault(*keys[0]))
        if key is None:
            raise ConfigError(
                f"{keys[1]} does not open {path}: it needs the key {manifest.key_id} (this one "
                f"is {Vault(*keys[0]).key_id()}); nothing was restored."
            )
        rows = sum(t.rows for t in manifest.tables)
        reader.verify(key, Tally(progress, "Checking the backup", rows, "rows"))
        _check_revision(url, manifest.schema_revision, path)
        engine = db.make_engine(url)
        try:
            with db.schema_transaction(engine) as conn:
                _clear(conn, force=force)
                _migrate(conn, url, manifest.schema_revision)
                _load(conn, reader, manifest.tables, Tally(progress, "Restoring", rows, "rows"))
                _migrate(conn, url, "head")
                if conn.dialect.name == "postgresql":
                    _reset_sequences(conn)
        finally:
            engine.dispose()
        return manifest
    finally:
        reader.close()


def _check_revision(url: str, revision: str, path: Path) -> None:
    """Refuse a backup whose schema this mdmbot does not know (a newer mdmbot wrote it)."""
    from alembic.script import ScriptDirectory  # Alembic loads only where a schema changes
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(db.alembic_config(url))
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise InvalidInput(
            f"{path} comes from a newer mdmbot (schema revision {revision}; this mdmbot knows up "
            f"to {script.get_current_head()}); upgrade mdmbot first. Nothing was restored."
        )


def _clear(conn: sa.Connection, *, force: bool) -> None:
    """Drop mdmbot's tables (only); refused, without `force`, when one holds a row of value."""
    existing = sa.MetaData()
    existing.reflect(conn, only=lambda name, _: name in OWN_TABLES)
    filled = [
        name
        for name, table in existing.tables.items()
        if name not in UPGRADE_WRITES
        and conn.execute(sa.select(table).limit(1)).first() is not None
    ]
    if filled and not force:
        raise InvalidInput(
            f"The target database is not empty ({len(filled)} of mdmbot's tables hold rows, "
            f"e.g. {sorted(filled)[0]}); restore into an empty database, or pass --force to "
            "replace mdmbot's tables in it. Nothing was restored."
        )
    existing.drop_all(conn)


def _migrate(conn: sa.Connection, url: str, revision: str) -> None:
    """Run the migrations up to `revision` inside the restore's transaction."""
    from alembic import command

    config = db.alembic_config(url)
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def _load(
    conn: sa.Connection, reader: BackupReader, entries: list[TableEntry], tally: Tally
) -> None:
    """Insert every table's rows (parents first) into the schema of the backup's revision."""
    schema = sa.MetaData()
    schema.reflect(conn)
    for entry in entries:
        table = schema.tables.get(entry.name)
        names = reader.columns(entry.name)
        if table is None or not set(names) <= set(table.columns.keys()):
            raise InvalidInput(
                f"{reader.path} holds table {entry.name} with columns its schema revision does "
                "not have; nothing was restored."
            )
        insert = table.insert().compile(dialect=conn.dialect, column_keys=names)
        order = [names.index(k) for k in (insert.positiontup or names)]
        convert = [_converter(table.columns[n].type, conn.dialect) for n in names]
        rows = (_row(values, convert, order) for values in tally.each(reader.rows(entry.name)))
        if conn.dialect.driver == "psycopg":
            _copy(conn, table.name, [names[i] for i in order], rows)
            continue
        while chunk := list(islice(rows, CHUNK_ROWS)):
            if conn.dialect.positional:
                conn.exec_driver_sql(str(insert), chunk)
            else:
                conn.exec_driver_sql(str(insert), [dict(zip(names, r, strict=True)) for r in chunk])


def _copy(conn: sa.Connection, table: str, names: list[str], rows: Iterator[Any]) -> None:
    """PostgreSQL with psycopg: COPY the rows in (far faster than INSERTs)."""
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    raw: Any = conn.connection.dbapi_connection
    statement = f"COPY {quote(table)} ({columns}) FROM STDIN"
    error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except error as exc:  # raised as SQLAlchemy raises its other driver errors
        raise sa.exc.DBAPIError.instance(statement, None, exc, error) from exc


Convert = Callable[[Any], Any] | None


def _converter(kind: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Convert:
    """How a stored JSON value becomes what the driver takes for this column."""
    bind = kind.dialect_impl(dialect).bind_processor(dialect)
    if not isinstance(kind, sa.DateTime):
        return bind

    def moment(value: Any) -> Any:
        parsed = datetime.fromisoformat(value)
        return bind(parsed) if bind else parsed

    return moment


def _row(values: list[Any], convert: list[Convert], order: list[int]) -> tuple[Any, ...]:
    """The driver's parameters for one row, in the statement's order."""
    for i, step in enumerate(convert):
        if step is not None and values[i] is not None:
            values[i] = step(values[i])
    return tuple(values[i] for i in order)


def _reset_sequences(conn: sa.Connection) -> None:
    """PostgreSQL: move each id sequence past the restored ids."""
    for table in tables():
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, sa.Integer):
            continue
        highest = sa.select(sa.func.max(keys[0])).scalar_subquery()
        sequence = sa.func.pg_get_serial_sequence(table.name, keys[0].name)
        conn.execute(sa.select(sa.func.setval(sequence, sa.func.coalesce(highest, 0) + 1, False)))
