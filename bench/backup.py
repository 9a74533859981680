"""Backup and restore times at 1,000 servers and 100,000 devices (issue 18).

    python -m bench.backup [--pg URL]     # PostgreSQL too: URL or MDMBOT_TEST_DATABASE_URL

Prints Markdown rows for bench/README.md ("Backup and restore"); writes nothing else. The baseline
is SQLite's own online backup API copying the same database file page by page.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from bench.common import pg_schema
from bench.seed import certificate
from core import db
from core.backup.restore import restore_backup
from core.backup.snapshot import take_backup
from core.vault import Vault, keys_from_setting, open_vault

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
SERVERS = 1_000
DEVICES = 100_000
KEY = "bench-backup-key-" + "k" * 32
FAMILIES = (("iPad", "iPadOS"), ("iPhone", "iOS"), ("Mac", "OSX"), ("AppleTV", "tvOS"))


def build(url: str) -> sa.Engine:
    """A migrated database with SERVERS linked servers (one active token each) and DEVICES."""
    db.upgrade(url)
    engine = db.make_engine(url)
    tables, vault = SQLModel.metadata.tables, Vault(*keys_from_setting(KEY))
    pem = certificate(NOW).pem.decode()
    secrets = vault.encrypt(json.dumps({"consumer_secret": "CS_" + "x" * 40, "n": 1}))
    ids = range(1, SERVERS + 1)
    with engine.begin() as conn:
        conn.execute(tables["server"].insert(), [_server(i) for i in ids])
        conn.execute(tables["certificate"].insert(), [_cert(i, pem) for i in ids])
        conn.execute(tables["token"].insert(), [_token(i, secrets) for i in ids])
        for start in range(0, DEVICES, 10_000):
            span = range(start, start + 10_000)
            conn.execute(tables["device"].insert(), [_device(i) for i in span])
            conn.execute(
                tables["devicechange"].insert(),
                [
                    {"server_id": 1 + i % SERVERS, "device_id": i + 1, "op_type": "added",
                     "op_date": NOW}
                    for i in span
                ],
            )
    with db.unit_of_work(engine) as session:
        open_vault(session, KEY, Path(tempfile.gettempdir()), NOW)
    return engine


def _server(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"Server {i}", "normalized_name": f"server {i}",
            "release_devices": True, "created_by": "UBENCH", "created_at": NOW}


def _cert(i: int, pem: str) -> dict[str, Any]:
    return {"id": i, "server_id": i, "pem": pem, "fingerprint_sha256": "0" * 64,
            "subject": "CN=mdm.bench.example.edu", "not_after": NOW + timedelta(days=700),
            "uploaded_by": "UBENCH", "uploaded_at": NOW, "active": True}


def _token(i: int, secrets: str) -> dict[str, Any]:
    return {"id": i, "server_id": i, "certificate_id": i, "consumer_key": f"CK_{i:040d}",
            "secrets": secrets, "issued_at": NOW, "expires_at": NOW + timedelta(days=365),
            "downloaded_by": "UBENCH", "status": "active", "rejected_attempts": 0}


def _device(i: int) -> dict[str, Any]:
    family, os_name = FAMILIES[i % len(FAMILIES)]
    return {"id": i + 1, "serial_number": f"C02{i:09d}", "model": f"{family} model",
            "description": "bench device", "color": "Silver", "asset_tag": f"A{i}",
            "device_family": family, "os": os_name, "order_number": "PO-1",
            "server_id": 1 + i % SERVERS, "assigned_at": NOW, "assigned_by": "bench",
            "profile_status": "empty", "imported_at": NOW}


class Timed:
    """Wall-clock and this process's CPU seconds of one call."""

    def __init__(self, action: Callable[[], object]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu

    def __str__(self) -> str:
        return f"{self.wall:.1f} s ({self.cpu:.1f} s CPU)"

    @property
    def met(self) -> str:
        """Whether it stayed well under a minute (30 s)."""
        return "yes" if self.wall < 30 else "**no**"


def timed(action: Callable[[], object]) -> Timed:
    """Time one call."""
    return Timed(action)


def run(pg: str | None) -> list[str]:
    """Markdown rows: backup and restore on SQLite (and PostgreSQL)."""
    rows: list[str] = []
    keys = (keys_from_setting(KEY), "MDMBOT_SECRET_KEY")
    vault = Vault(*keys[0])
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = f"sqlite:///{work / 'source.db'}"
        engine = build(source)
        size = (work / "source.db").stat().st_size
        path = work / "bench.mdmbackup"
        backup = timed(lambda: take_backup(engine, vault, path, force=False, now=NOW, version="b"))
        engine.dispose()

        def copy() -> None:
            with sqlite3.connect(work / "source.db") as src, sqlite3.connect(work / "c.db") as dst:
                src.backup(dst)

        raw = timed(copy)
        into_sqlite = timed(
            lambda: restore_backup(f"sqlite:///{work / 'r.db'}", keys, path, force=False)
        )
        mb = path.stat().st_size / 1e6
        rows.append(
            f"| `mdmbot backup`, SQLite, {SERVERS:,} servers + {DEVICES:,} devices "
            f"({size / 1e6:.0f} MB database) | {backup}, file {mb:.1f} MB | SQLite "
            f"online backup API (page copy): {raw.wall:.2f} s | < 30 s | {backup.met} |"
        )
        rows.append(
            f"| `mdmbot restore` of that file into a new SQLite | {into_sqlite} | page copy: "
            f"{raw.wall:.2f} s | < 30 s | {into_sqlite.met} |"
        )
        if pg:
            with pg_schema(pg) as url:
                into_pg = timed(lambda: restore_backup(url, keys, path, force=False))
                pg_engine = db.make_engine(url)
                again = work / "pg.mdmbackup"
                pg_backup = timed(
                    lambda: take_backup(pg_engine, vault, again, force=False, now=NOW, version="b")
                )
                pg_engine.dispose()
            rows.append(
                f"| `mdmbot restore` of that file into PostgreSQL (the move; COPY) | {into_pg} | "
                f"page copy: {raw.wall:.2f} s | < 30 s | {into_pg.met} |"
            )
            rows.append(
                f"| `mdmbot backup` from PostgreSQL, same data | {pg_backup} | page copy: "
                f"{raw.wall:.2f} s | < 30 s | {pg_backup.met} |"
            )
    return rows


def main() -> None:
    """Print the rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", default=os.environ.get("MDMBOT_TEST_DATABASE_URL"))
    print("\n".join(run(parser.parse_args().pg)))


if __name__ == "__main__":
    main()
