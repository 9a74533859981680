"""Shared fixtures: a migrated database on SQLite and, when configured, PostgreSQL.

Each test process migrates one database per kind (the template) and gives every test a copy: a
copy of the SQLite file, or the PostgreSQL schema replayed from `pg_dump` under a new name. A
copy is the migrated schema byte for byte, and costs a fraction of running the migrations again
(which, on PostgreSQL, also take turns on one advisory lock across all test processes).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
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


@functools.cache
def sqlite_template() -> Path:
    """A migrated SQLite file, made once per test process, for `migrated_sqlite` to copy."""
    path = Path(tempfile.mkdtemp(prefix="mdmbot-template-")) / "template.db"
    atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
    db.upgrade(f"sqlite:///{path}")
    return path


def migrated_sqlite(path: Path) -> str:
    """The URL of a migrated SQLite database at `path`: a copy of the template."""
    shutil.copyfile(sqlite_template(), path)
    return f"sqlite:///{path}"


@functools.cache
def _pg_template() -> tuple[str, str] | None:
    """A migrated schema's `pg_dump` and its name, made once per test process (None: no
    pg_dump; each schema is then migrated)."""
    assert PG_URL
    if shutil.which("pg_dump") is None:
        return None
    with postgres_schema(migrate=True, copy=False) as url:
        schema = sa.make_url(url).query["application_name"]
        assert isinstance(schema, str)
        target = sa.make_url(PG_URL).set(drivername="postgresql")
        options = ["--schema", schema, "--inserts", "--no-owner", "--no-privileges"]
        dumped = subprocess.run(
            ["pg_dump", "--dbname", target.render_as_string(hide_password=False), *options],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if dumped.returncode != 0:
        return None
    # psql's meta-commands (`\restrict`) are not SQL: the driver runs the rest.
    lines = (line for line in dumped.stdout.splitlines() if not line.startswith("\\"))
    return "\n".join(lines), schema


@contextmanager
def postgres_schema(*, migrate: bool = True, copy: bool = True) -> Iterator[str]:
    """A private schema in the PostgreSQL test database (migrated), dropped afterwards."""
    if not PG_URL:
        pytest.skip("MDMBOT_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    template = _pg_template() if migrate and copy else None
    with admin.begin() as conn:
        if template is None:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        else:  # the dump creates the schema, its tables and the alembic_version row
            dump, name = template
            conn.exec_driver_sql(dump.replace(name, schema))
    url = _pg_schema_url(PG_URL, schema)
    try:
        if migrate and template is None:
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
        yield migrated_sqlite(tmp_path / "mdmbot.db")
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
