"""Shared by the backup tests: a database with a bit of everything, and every row of it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bot.context import AppContext
from core.backup.archive import MANIFEST, Manifest, TableEntry, encode_line, table_member
from core.backup.snapshot import tables
from core.devices import csv_import, inventory
from core.people import rotation
from core.settings import Settings
from tests.conftest import NOW
from tests.dep_client import Creds, add_server
from tests.devices_support import OPERATOR, csv_of, serial

KEY = "k" * 40


def context(url: str, data_dir: Path, key: str | None = KEY) -> AppContext:
    """An AppContext on `url` whose clock stands still at NOW."""
    settings = Settings(mdmbot_database_url=url, mdmbot_data_dir=data_dir, mdmbot_secret_key=key)
    return AppContext(settings, clock=lambda: NOW)


def seed(ctx: AppContext, devices: int = 30) -> dict[str, Creds]:
    """Two linked servers, devices assigned to one, and an open rotation checklist."""
    with ctx.unit_of_work() as session:
        made = {
            name: add_server(session, ctx.vault, name, NOW, actor="UADMIN01")
            for name in ("District Jamf", "Lab Mosyle")
        }
        serials = [serial(i) for i in range(devices)]
        csv_import.import_devices(session, OPERATOR, csv_of(serials), NOW)
        inventory.assign_devices(session, OPERATOR, "District Jamf", serials[:20], NOW)
        rotation.record_departure(session, "UADMIN01", NOW + timedelta(minutes=5), name="alex")
    return made


def all_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in primary key order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [
                    dict(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key)).mappings()
                ]
                for t in tables()
            }
    finally:
        engine.dispose()


def rewrite(
    source: Path, target: Path, change: dict[str, bytes], drop: frozenset[str] = frozenset()
) -> None:
    """Copy a backup archive, replacing (or dropping) the named members."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename not in drop:
                new.writestr(info.filename, change.get(info.filename, old.read(info.filename)))


def resealed(
    source: Path, target: Path, key: bytes, drop: frozenset[str] = frozenset(), **fields: Any
) -> None:
    """Copy a backup with manifest fields changed and sealed again with `key` (a real key)."""
    with zipfile.ZipFile(source) as old:
        raw = json.loads(old.read(MANIFEST))
    raw.pop("mac")
    raw.update(fields)
    manifest = Manifest(**{**raw, "tables": [TableEntry(**t) for t in raw["tables"]]})
    document = {**raw, "mac": manifest.seal(key)}
    rewrite(source, target, {MANIFEST: json.dumps(document).encode()}, drop)


def as_older(
    source: Path,
    target: Path,
    key: bytes,
    revision: str,
    new_tables: tuple[str, ...],
    new_columns: dict[str, tuple[str, ...]],
) -> None:
    """Copy a backup as a schema at `revision` would have written it: the tables and columns
    added since left out, every changed table's hash and the manifest sealed again."""
    with zipfile.ZipFile(source) as old:
        raw = json.loads(old.read(MANIFEST))
        changed: dict[str, bytes] = {}
        for name, columns in new_columns.items():
            lines = old.read(table_member(name)).splitlines()
            header = json.loads(lines[0])
            keep = [i for i, column in enumerate(header) if column not in columns]
            out = [encode_line([json.loads(line)[i] for i in keep]) for line in lines]
            changed[table_member(name)] = b"".join(out)
            digest = hashlib.sha256()
            for line in out:
                digest.update(line)
            for entry in raw["tables"]:
                if entry["name"] == name:
                    entry["sha256"] = digest.hexdigest()
    raw.pop("mac")
    raw["tables"] = [t for t in raw["tables"] if t["name"] not in new_tables]
    raw["schema_revision"] = revision
    manifest = Manifest(**{**raw, "tables": [TableEntry(**t) for t in raw["tables"]]})
    changed[MANIFEST] = json.dumps({**raw, "mac": manifest.seal(key)}).encode()
    rewrite(source, target, changed, frozenset(table_member(t) for t in new_tables))
