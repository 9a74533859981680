"""Migrations on old data: 0006 keeps the newest active token, 0009 each server's consumer key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from core import db
from tests.conftest import postgres_schema

NOW = "2026-11-28 10:00:00+00:00"
TOKEN = (
    "INSERT INTO token (id, server_id, certificate_id, consumer_key, secrets, issued_at, "
    "expires_at, downloaded_by, status) VALUES (:id, 1, 1, :key, 'x', :issued, "
    "'2027-11-27 10:00:00+00:00', 'U1', :status)"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (SQLite file or private PostgreSQL schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with postgres_schema(migrate=False) as url:
        yield url


def test_duplicate_active_tokens_are_collapsed_to_the_newest(unmigrated_url: str) -> None:
    command.upgrade(db.alembic_config(unmigrated_url), "0003")
    engine = db.make_engine(unmigrated_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO server (id, name, normalized_name, release_devices, created_by, "
                "created_at) VALUES (1, 'Jamf', 'jamf', true, 'op', '2026-11-27 10:00:00+00:00')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO certificate (id, server_id, pem, fingerprint_sha256, subject, "
                "not_after, uploaded_by, uploaded_at, active) VALUES (1, 1, 'p', 'f', 's', "
                "'2030-01-01 00:00:00+00:00', 'op', '2026-11-27 10:00:00+00:00', true)"
            )
        )
        for token_id, minute, status in ((1, 1, "active"), (2, 3, "active"), (3, 2, "active")):
            conn.execute(
                sa.text(TOKEN),
                {
                    "id": token_id,
                    "key": f"CK_{token_id}",
                    "issued": f"2026-11-27 10:0{minute}:00+00:00",
                    "status": status,
                },
            )
    engine.dispose()
    db.upgrade(unmigrated_url)
    engine = db.make_engine(unmigrated_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status, reason FROM token ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        (1, "superseded", "duplicate active token"),
        (2, "active", None),
        (3, "superseded", "duplicate active token"),
    ]


def test_0009_keeps_each_servers_current_consumer_key(unmigrated_url: str) -> None:
    command.upgrade(db.alembic_config(unmigrated_url), "0008")
    engine = db.make_engine(unmigrated_url)
    with engine.begin() as conn:
        for server_id, name in ((1, "Jamf"), (2, "Mosyle"), (3, "Empty")):
            conn.execute(
                sa.text(
                    "INSERT INTO server (id, name, normalized_name, release_devices, created_by, "
                    "created_at) VALUES (:id, :name, :key, true, 'op', "
                    "'2026-11-27 10:00:00+00:00')"
                ),
                {"id": server_id, "name": name, "key": name.lower()},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO certificate (id, server_id, pem, fingerprint_sha256, subject, "
                    "not_after, uploaded_by, uploaded_at, active) VALUES (:id, :id, 'p', 'f', "
                    "'s', '2030-01-01 00:00:00+00:00', 'op', '2026-11-27 10:00:00+00:00', true)"
                ),
                {"id": server_id},
            )
        rows = ((1, 1, 1, "superseded"), (2, 1, 2, "active"), (3, 1, 3, "pending"))
        rows += ((4, 2, 1, "superseded"), (5, 2, 2, "superseded"))
        for token_id, server_id, minute, status in rows:
            conn.execute(
                sa.text(TOKEN.replace("VALUES (:id, 1, 1,", "VALUES (:id, :server, :server,")),
                {
                    "id": token_id,
                    "server": server_id,
                    "key": f"CK_{token_id}",
                    "issued": f"2026-11-27 10:0{minute}:00+00:00",
                    "status": status,
                },
            )
        conn.execute(  # a row that refers to a token: rebuilding `token` must keep it valid
            sa.text(
                "INSERT INTO depsession (key_hash, token_id, created_at, expires_at) VALUES "
                "('h', 2, '2026-11-27 10:00:00+00:00', '2026-11-27 10:03:00+00:00')"
            )
        )
    engine.dispose()
    db.upgrade(unmigrated_url)
    engine = db.make_engine(unmigrated_url)
    with engine.begin() as conn:
        keys = conn.execute(sa.text("SELECT id, consumer_key FROM server ORDER BY id")).all()
        conn.execute(sa.text(TOKEN), {"id": 9, "key": "CK_2", "issued": NOW, "status": "pending"})
        count = conn.execute(sa.text("SELECT count(*) FROM token WHERE consumer_key = 'CK_2'"))
        assert count.scalar_one() == 2, "tokens of one server now share its key"
    engine.dispose()
    assert [tuple(k) for k in keys] == [(1, "CK_2"), (2, "CK_5"), (3, None)]
