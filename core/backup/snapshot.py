"""`mdmbot backup`: one consistent snapshot of every table, written to a temp file and renamed."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlmodel import SQLModel

import core.asm.models  # the served School Manager API's tables register themselves too
import core.models  # noqa: F401  (every table registers itself in SQLModel.metadata)
from core import db
from core.backup.archive import (
    Manifest,
    TableEntry,
    encode_line,
    table_member,
    write_manifest,
)
from core.errors import InvalidInput
from core.progress import Progress, Tally
from core.vault import KEY_CHECK_ID, Vault, fingerprint

CHUNK_ROWS = 5000


def tables() -> list[sa.Table]:
    """Every table of core/models.py, each after the tables it refers to."""
    return list(SQLModel.metadata.sorted_tables)


@contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One read transaction that sees a single moment (PostgreSQL: REPEATABLE READ)."""
    if engine.dialect.name != "postgresql":
        # SQLite in WAL mode: a deferred read transaction keeps its first read's view
        with db.transaction(engine, readonly=True) as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin() as transaction:
            yield conn
            transaction.rollback()


def take_backup(
    engine: sa.Engine,
    vault: Vault,
    path: Path,
    *,
    force: bool,
    now: datetime,
    version: str,
    progress: Progress | None = None,
) -> Manifest:
    """Write every table to `path` (mode 0600); an existing file is refused without `force`."""
    if path.exists() and not force:
        raise InvalidInput(f"{path} already exists; pass --force to replace it.")
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; name the backup file to write.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidInput(f"The directory {parent} does not exist.")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".mdmbot-backup-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            manifest = _write(engine, vault, handle, now, version, progress)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # never replaces a file that appeared meanwhile
            except FileExistsError as exc:
                raise InvalidInput(f"{path} already exists; pass --force to replace it.") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def _write(
    engine: sa.Engine,
    vault: Vault,
    handle: IO[bytes],
    now: datetime,
    version: str,
    progress: Progress | None,
) -> Manifest:
    entries: list[TableEntry] = []
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        with snapshot(engine) as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
            check = conn.execute(
                sa.text("SELECT value FROM keycheck WHERE id = :id"), {"id": KEY_CHECK_ID}
            ).scalar()
            total = _count(conn) if progress else 0
            tally = Tally(progress, "Backing up", total, "rows")
            entries = [_dump(conn, table, archive, now, tally) for table in tables()]
        if check is None:
            raise InvalidInput(
                "The database holds no key check value yet; start mdmbot once first."
            )
        key = next((k for k in vault.keys if Vault(k).can_decrypt(str(check))), None)
        if key is None:
            raise InvalidInput(f"{vault.source} does not open this database's secrets.")
        manifest = Manifest(
            schema_revision=str(revision),
            created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            mdmbot_version=version,
            key_id=fingerprint(key),
            key_check=str(check),
            tables=entries,
        )
        write_manifest(archive, manifest, key)
    return manifest


def _count(conn: sa.Connection) -> int:
    """How many rows the snapshot holds (what a progress bar counts towards)."""
    count = sa.func.count()
    return sum(int(conn.execute(sa.select(count).select_from(t)).scalar_one()) for t in tables())


def _dump(
    conn: sa.Connection, table: sa.Table, archive: zipfile.ZipFile, now: datetime, tally: Tally
) -> TableEntry:
    """Stream one table, in primary key order, into its archive member."""
    digest, rows = hashlib.sha256(), 0
    query = sa.select(table).order_by(*table.primary_key.columns)
    info = zipfile.ZipInfo(table_member(table.name), date_time=now.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16
    with archive.open(info, "w", force_zip64=True) as member:
        header = encode_line([c.name for c in table.columns])
        member.write(header)
        digest.update(header)
        result = conn.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for chunk in result.partitions():
            data = b"".join(encode_line(tuple(row)) for row in chunk)
            member.write(data)
            digest.update(data)
            rows += len(chunk)
            tally.add(len(chunk))
    return TableEntry(table.name, rows, digest.hexdigest())
