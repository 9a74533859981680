"""Many people assign the same serials to different servers at once (PostgreSQL): every
assignment lands whole, and every server's sync ends with exactly its devices. And the one
interleaving the per-server lock exists for: a change logged first but committed last."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.db import unit_of_work
from core.dep import profiles as dep_profiles
from core.devices import changelog
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


def _later_commit_first(
    engine: sa.Engine, vault: Vault, tag: str, profiles: bool
) -> dict[str, str | None]:
    """T1 logs a change and stays open; T2 logs the next change; a sync runs; T1 commits.
    The changes assign a device (or, with `profiles`, a profile to a device of the server).
    Returns what the server's client holds (serial: profile) once it has synced everything."""
    first, second, name = serial(1, prefix=tag), serial(2, prefix=tag), f"Lock {tag}"
    with unit_of_work(engine) as session:
        sid = add_server(session, vault, name, NOW)
        device_import.import_devices(session, OPERATOR, csv_of([first, second]), NOW)
        if profiles:
            devices.assign_devices(session, OPERATOR, name, [first, second], NOW)
        body = {"profile_name": "p", "url": "https://mdm.example/enroll"}
        uuid = dep_profiles.define_profile(session, sid, body, NOW)["profile_uuid"]

    def write(session: Session, device: str) -> None:
        if profiles:
            picked = {"profile_uuid": uuid, "devices": [device]}
            dep_profiles.assign_profile(session, sid, picked, NOW)
        else:
            devices.assign_devices(session, OPERATOR, name, [device], NOW)

    client = WalkingClient(core_caller(engine, sid, lambda: NOW))
    client.drain(10)
    outcome: list[BaseException | None] = []
    backend: list[int] = []

    def write_second() -> None:
        try:
            with unit_of_work(engine) as other:
                backend.append(other.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                write(other, second)
            outcome.append(None)
        except BaseException as exc:  # inspected below
            outcome.append(exc)

    def done_or_waiting() -> bool:
        if not t2.is_alive():
            return True
        if not backend:
            return False
        waiting = "SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(waiting), {"pid": backend[0]}).scalar_one())

    t1 = Session(engine)
    try:
        write(t1, first)
        t1.flush()  # the change row has its id; the transaction is still open
        t2 = threading.Thread(target=write_second)
        t2.start()
        deadline = time.monotonic() + 30
        while not done_or_waiting() and time.monotonic() < deadline:
            time.sleep(0.02)  # with the lock T2 waits for T1; without, it commits now
        client.step(10)
        t1.commit()
    finally:
        t1.close()
    t2.join(timeout=30)
    assert outcome == [None]
    client.drain(10)
    return {s: d.get("profile_uuid") for s, d in client.devices.items()}


@pytest.mark.postgres
@pytest.mark.parametrize("profiles", [False, True], ids=["assign devices", "assign profiles"])
def test_a_change_committed_late_is_not_stepped_over(
    engine: sa.Engine, vault: Vault, monkeypatch: pytest.MonkeyPatch, profiles: bool
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writers are serial")
    held = _later_commit_first(engine, vault, "LOCK", profiles)
    assert set(held) == {serial(1, "LOCK"), serial(2, "LOCK")}
    assert all(held.values()) == profiles, "every change reached the client"
    for module in (devices, dep_profiles):
        monkeypatch.setattr(module, "lock_servers", lambda session, ids: None)
    assert changelog.lock_servers is not devices.lock_servers
    lost = _later_commit_first(engine, vault, "NOLK", profiles)
    first, second = serial(1, "NOLK"), serial(2, "NOLK")
    assert second in lost and bool(lost[second]) == profiles
    assert first not in lost or lost[first] is None, "without the lock T1's change is lost"
