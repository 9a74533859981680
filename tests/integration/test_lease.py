"""The scheduler lease: one holder at a time across processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from core import db
from core.lease import acquire, holder, release
from tests.conftest import NOW

TTL = timedelta(minutes=5)


def take(engine: sa.Engine, who: str, offset: timedelta = timedelta(0)) -> bool:
    with db.unit_of_work(engine) as s:
        return acquire(s, "scheduler", who, NOW + offset, TTL)


def current(engine: sa.Engine, offset: timedelta = timedelta(0)) -> str | None:
    with db.unit_of_work(engine) as s:
        return holder(s, "scheduler", NOW + offset)


def test_holder_blocks_others_until_ttl_passes(engine: sa.Engine) -> None:
    assert current(engine) is None
    assert take(engine, "A")
    assert current(engine) == "A"
    assert not take(engine, "B", timedelta(minutes=1))
    assert take(engine, "A", timedelta(minutes=4))  # renewal: now held until 4 + 5 minutes
    assert not take(engine, "B", timedelta(minutes=8))
    assert current(engine, timedelta(minutes=9, seconds=1)) is None
    assert take(engine, "B", timedelta(minutes=9, seconds=1))
    assert current(engine, timedelta(minutes=10)) == "B"
    assert not take(engine, "A", timedelta(minutes=10))


def test_release_frees_only_the_holders_lease(engine: sa.Engine) -> None:
    assert take(engine, "A")
    with db.unit_of_work(engine) as s:
        release(s, "scheduler", "B")
    assert current(engine) == "A"
    with db.unit_of_work(engine) as s:
        release(s, "scheduler", "A")
    assert current(engine) is None
    assert take(engine, "B")


def test_leases_are_independent_by_name(engine: sa.Engine) -> None:
    with db.unit_of_work(engine) as s:
        assert acquire(s, "scheduler", "A", NOW, TTL)
        assert acquire(s, "reconcile", "B", NOW, TTL)
        assert holder(s, "reconcile", NOW) == "B"


def race(engine: sa.Engine, names: list[str], offset: timedelta) -> list[str]:
    """Let every name try to take the lease at the same moment; return the winners."""
    barrier = threading.Barrier(len(names))
    wins: list[str] = []
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            barrier.wait(timeout=30)
            if take(engine, name, offset):
                wins.append(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    return wins


def test_racing_acquirers_one_wins(engine: sa.Engine) -> None:
    [first] = race(engine, ["P1", "P2", "P3", "P4"], timedelta(0))  # free lease
    assert current(engine) == first
    [second] = race(engine, ["Q1", "Q2", "Q3", "Q4"], timedelta(hours=1))  # expired lease
    assert current(engine, timedelta(hours=1)) == second
