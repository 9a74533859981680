"""Many people assign the same serials to different servers at once (PostgreSQL): every
assignment lands whole, and every server's sync ends with exactly its devices."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from core.db import unit_of_work
from core.dep import profiles as dep_profiles
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.models import Device, DeviceChange
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import OPERATOR, WalkingClient, add_server, core_caller, csv_of, serial

CONTENDERS = 12
SERVERS = 4


@pytest.mark.postgres
def test_concurrent_assignment_of_the_same_serials(engine: sa.Engine, vault: Vault) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks and commit order are PostgreSQL's; SQLite writers are serial")
    serials = [serial(i) for i in range(40)]
    with unit_of_work(engine) as session:
        ids = [add_server(session, vault, f"Server {i}", NOW) for i in range(SERVERS)]
        device_import.import_devices(session, OPERATOR, csv_of(serials), NOW)
        profiles = [
            dep_profiles.define_profile(session, sid, {"profile_name": "p", "url": "u"}, NOW)
            for sid in ids
        ]

    clients = [WalkingClient(core_caller(engine, sid, lambda: NOW)) for sid in ids]
    for client in clients:
        client.drain(7)
    barrier = threading.Barrier(CONTENDERS)

    def contend(index: int) -> object:
        target = index % SERVERS
        # overlapping windows, in opposite orders, so that contenders really collide
        chosen = serials[index : index + 30][:: 1 if index % 2 else -1]
        barrier.wait(timeout=30)
        try:
            for _round in range(3):
                with unit_of_work(engine) as session:
                    devices.assign_devices(session, OPERATOR, f"Server {target}", chosen, NOW)
                with unit_of_work(engine) as session:
                    body = {"profile_uuid": profiles[target]["profile_uuid"], "devices": chosen}
                    dep_profiles.assign_profile(session, ids[target], body, NOW)
                for client in clients:
                    client.step(5)
            return None
        except BaseException as exc:  # every outcome is inspected below
            return exc

    with ThreadPoolExecutor(max_workers=CONTENDERS) as pool:
        outcomes = list(pool.map(contend, range(CONTENDERS)))
    assert outcomes == [None] * CONTENDERS

    with unit_of_work(engine, readonly=True) as session:
        rows = session.exec(select(Device)).all()
        truth = {
            sid: {d.serial_number: d.profile_uuid for d in rows if d.server_id == sid}
            for sid in ids
        }
        assert sum(len(v) for v in truth.values()) == 40
        changes = session.exec(select(DeviceChange.server_id, DeviceChange.op_type)).all()
        assert len(changes) > 40
    later = NOW + timedelta(minutes=1)
    for sid, client in zip(ids, clients, strict=True):
        client.drain(3)
        assert {s: d.get("profile_uuid") for s, d in client.devices.items()} == truth[sid]
        fresh = WalkingClient(core_caller(engine, sid, lambda: NOW))
        fresh.drain(1000)
        assert set(fresh.devices) == set(truth[sid]), later
