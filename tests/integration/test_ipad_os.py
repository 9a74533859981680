"""An iPad runs iPadOS: one imported as `iOS` (the name before 2019) is stored and echoed as
`iPadOS`, as protocol 7 clients expect; migration 0010 corrects iPads imported before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlmodel import Session

from core import db
from core.db import unit_of_work
from core.dep import devices as dep_devices
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.devices.changelog import lock_devices
from tests.conftest import NOW, postgres_schema
from tests.devices_support import OPERATOR, csv_of, serial

DEVICE = (
    "INSERT INTO device (id, serial_number, model, description, color, device_family, os, "
    "profile_status, imported_at) VALUES (:id, :serial, 'm', 'd', 'c', :family, :os, 'empty', "
    "'2026-11-27 10:00:00+00:00')"
)


def test_an_ipad_imported_as_ios_is_ipados(session: Session) -> None:
    device_import.import_devices(session, OPERATOR, csv_of([serial(1)], os="iOS"), NOW)
    phone = csv_of([serial(2)], family="iPhone", os="ios", model="iPhone 15")
    device_import.import_devices(session, OPERATOR, phone, NOW)
    assert devices.show_device(session, serial(1)).os == "iPadOS"
    assert devices.show_device(session, serial(2)).os == "iOS"
    shown = lock_devices(session, [serial(1)], lock=False)[serial(1)]
    assert dep_devices.device_json(shown)["os"] == "iPadOS"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (SQLite file or private PostgreSQL schema), migrated to 0008."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        command.upgrade(db.alembic_config(url), "0008")
        yield url
        return
    with postgres_schema(migrate=False) as url:
        command.upgrade(db.alembic_config(url), "0008")
        yield url


def test_migration_0010_corrects_ipads_imported_as_ios(old_database: str) -> None:
    engine = db.make_engine(old_database)
    with engine.begin() as conn:
        for index, family, os in ((1, "iPad", "iOS"), (2, "iPhone", "iOS"), (3, "Mac", "OSX")):
            conn.execute(
                sa.text(DEVICE),
                {"id": index, "serial": serial(index), "family": family, "os": os},
            )
    engine.dispose()
    db.upgrade(old_database)
    engine = db.make_engine(old_database)
    with unit_of_work(engine, readonly=True) as session:
        shown = [devices.show_device(session, serial(i)).os for i in (1, 2, 3)]
    engine.dispose()
    assert shown == ["iPadOS", "iOS", "OSX"]
