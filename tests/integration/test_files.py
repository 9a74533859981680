"""The SQLite database and the data directory are private to the account mdmbot runs as."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import db


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which files are created world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_database_and_its_directory_are_private(tmp_path: Path) -> None:
    data = tmp_path / "share" / "mdmbot"
    engine = db.make_engine(f"sqlite:///{data / 'mdmbot.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            files = {p.name: mode(p) for p in data.iterdir()}
    finally:
        engine.dispose()

    assert mode(data) == 0o700
    assert files == {"mdmbot.db": 0o600, "mdmbot.db-wal": 0o600, "mdmbot.db-shm": 0o600}


def test_an_existing_open_installation_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "mdmbot"
    data.mkdir(mode=0o755)
    path = data / "mdmbot.db"
    with sqlite3.connect(path) as plain:
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("CREATE TABLE t (x INTEGER)")
    path.chmod(0o644)
    assert (mode(data), mode(path)) == (0o755, 0o644)

    engine = db.make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
            assert {p.name: mode(p) for p in data.iterdir()} == {
                "mdmbot.db": 0o600,
                "mdmbot.db-wal": 0o600,
                "mdmbot.db-shm": 0o600,
            }
    finally:
        engine.dispose()
    assert mode(data) == 0o700
