"""SQLite writers in two processes take turns on the writers' lock file, not the busy handler."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.context import checkpoint_in_background, leave_checkpoints_to_thread
from core.db import WriterTurns, make_engine, writer_turns

OTHER_WRITER = """
import sys, time
from pathlib import Path
from core.db import WriterTurns
turns = WriterTurns(Path(sys.argv[1]))
print("ready", flush=True)
with turns:
    print(f"{time.time():.6f}", flush=True)
"""


def test_a_writer_in_another_process_waits_for_the_turn_and_gets_it_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mdmbot.db-writers"
    turns = WriterTurns(path)
    with turns:
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER_WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        released = time.time()
    got, _ = other.communicate(timeout=30)
    assert other.returncode == 0
    waited_after_release = float(got) - released
    assert 0 <= waited_after_release < 0.05


def test_threads_of_one_process_take_turns_too(tmp_path: Path) -> None:
    turns = WriterTurns(tmp_path / "db-writers")
    inside: list[int] = []
    overlaps: list[int] = []

    def write(n: int) -> None:
        with turns:
            inside.append(n)
            if len(inside) > 1:
                overlaps.append(n)
            time.sleep(0.01)
            inside.remove(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert overlaps == []


def test_each_database_gets_the_turns_it_needs(tmp_path: Path) -> None:
    file_engine = make_engine(f"sqlite:///{tmp_path / 'mdmbot.db'}")
    turns = writer_turns(file_engine)
    assert isinstance(turns, WriterTurns)
    assert turns.path == tmp_path / "mdmbot.db-writers"
    assert not isinstance(writer_turns(sa.create_engine("sqlite://")), WriterTurns)
    pg = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with writer_turns(pg):
        pass


def test_serve_copies_the_log_into_the_database_from_a_thread_not_a_commit(
    tmp_path: Path,
) -> None:
    """Past SQLite's 1,000-page threshold no commit copies the log back; the thread does."""
    database = tmp_path / "mdmbot.db"
    engine = make_engine(f"sqlite:///{database}")
    leave_checkpoints_to_thread(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB)")
    empty = database.stat().st_size
    for _ in range(30):  # 30 commits of 200 KB: 1,500 pages of log
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO blob (data) VALUES (randomblob(200000))")
    assert database.stat().st_size == empty, "no commit checkpointed"
    stop = checkpoint_in_background(database, interval=0.01)
    try:
        deadline = time.monotonic() + 10
        while database.stat().st_size < 6_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop()
    assert database.stat().st_size >= 6_000_000, "the thread copied the log into the database"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM blob").scalar() == 30
    engine.dispose()


def test_a_checkpoint_thread_that_cannot_open_the_database_says_so_and_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = checkpoint_in_background(tmp_path / "missing" / "mdmbot.db", interval=0.01)
    stop()
    assert "no checkpoints of" in caplog.text
