"""Shared fixtures: a migrated database on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core import db
from core.vault import Vault
from tests.fakemdm import FakeNanoDep

PG_URL = os.environ.get("MDMBOT_TEST_DATABASE_URL")
NOW = datetime(2026, 11, 27, 14, 3, 34, tzinfo=UTC)


def _pg_schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}&application_name={schema}"


@contextmanager
def postgres_schema(*, migrate: bool = True) -> Iterator[str]:
    """A private schema in the PostgreSQL test database (migrated), dropped afterwards."""
    if not PG_URL:
        pytest.skip("MDMBOT_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = _pg_schema_url(PG_URL, schema)
    try:
        if migrate:
            db.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            # A bot thread may still hold a transaction on the schema: end its sessions first.
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (schema,),
            )
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database URL: SQLite in tmp, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mdmbot.db'}"
        db.upgrade(url)
        yield url
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on the migrated test database."""
    eng = db.make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    """One unit of work, committed at the end of the test."""
    with db.unit_of_work(engine) as s:
        yield s


@pytest.fixture
def vault() -> Vault:
    """A vault with a fixed test key."""
    return Vault(b"0" * 43 + b"=")


@pytest.fixture
def nanodep() -> Iterator[FakeNanoDep]:
    """A running NanoDEP-shaped fake (tests/fakemdm.py) with the key NANODEP_KEY."""
    fake = FakeNanoDep().start()
    yield fake
    fake.stop()
