"""Property: no fetch or sync answer to a server ever holds a value another server set. Every
device in an answer to server X carries profile and assignment values the device had at some
moment while it was assigned to X (or none: what Apple shows a server that lost the device)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, select

from core.db import unit_of_work
from core.dep import devices as dep_devices
from core.dep import profiles as dep_profiles
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.models import Device
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import (
    OPERATOR,
    Call,
    WalkingClient,
    add_server,
    core_caller,
    csv_of,
    serial,
)

SERVERS = 2
DEVICES = 3
STATE = (
    "profile_status",
    "profile_uuid",
    "profile_assign_time",
    "profile_push_time",
    "device_assigned_date",
    "device_assigned_by",
)
_examples = itertools.count()

picks = st.lists(st.integers(0, DEVICES - 1), min_size=1, max_size=2, unique=True)
servers_ = st.integers(0, SERVERS - 1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), servers_, picks),
        st.tuples(st.just("profile"), servers_, picks),
        st.tuples(st.just("clear"), servers_, picks),
        st.tuples(st.just("disown"), servers_, picks),
        st.tuples(st.just("unassign"), st.just(0), picks),
        st.tuples(st.just("step"), servers_, st.sampled_from([[1], [2], [100]])),
    ),
    min_size=1,
    max_size=30,
)


def state(device: dict[str, Any]) -> tuple[Any, ...]:
    """The values of a Device object that a server or an assignment sets."""
    return tuple(device.get(name) for name in STATE)


class World:
    """Servers with a walking client each; `seen` holds, per (server, serial), every state the
    device had while it was that server's."""

    def __init__(self, engine: sa.Engine, vault: Vault) -> None:
        example = next(_examples)
        self.engine, self.now = engine, NOW
        self.serials = [serial(i, prefix=f"I{example:04d}") for i in range(DEVICES)]
        self.names = [f"isolation {example} server {i}" for i in range(SERVERS)]
        with unit_of_work(engine) as session:
            self.ids = [add_server(session, vault, name, NOW) for name in self.names]
            device_import.import_devices(session, OPERATOR, csv_of(self.serials), NOW)
        self.seen: dict[tuple[int, str], set[tuple[Any, ...]]] = {}
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.clients = [WalkingClient(self._recording(sid)) for sid in self.ids]
        self.record()

    def _recording(self, server_id: int) -> Call:
        call = core_caller(self.engine, server_id, lambda: self.now)

        def recorded(kind: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = call(kind, body)
            self.answers.extend((server_id, device) for device in answer["devices"])
            return answer

        return recorded

    def record(self) -> None:
        """Remember each device's state under the server it is assigned to now."""
        with unit_of_work(self.engine, readonly=True) as session:
            mine = col(Device.serial_number).in_(self.serials)
            for device in session.exec(select(Device).where(mine)):
                if device.server_id is not None:
                    key = (device.server_id, device.serial_number)
                    self.seen.setdefault(key, set()).add(state(dep_devices.device_json(device)))

    def apply(self, op: str, target: int, chosen: list[int]) -> None:
        self.now += timedelta(seconds=1)
        if op == "step":
            self.clients[target].step(chosen[0])
            return
        serials, sid, now = [self.serials[i] for i in chosen], self.ids[target], self.now
        with unit_of_work(self.engine) as session:
            if op == "assign":
                name = self.names[target]
                devices.assign_devices(session, OPERATOR, name, serials, now, partial=True)
            elif op == "profile":
                body = {"profile_name": f"p{now:%S}", "url": "https://mdm.example/enroll"}
                dep_profiles.define_profile(session, sid, body | {"devices": serials}, now)
            elif op == "clear":
                dep_profiles.clear_profiles(session, sid, {"devices": serials}, now)
            elif op == "disown":
                dep_devices.disown_devices(session, sid, {"devices": serials}, now)
            else:
                listed = devices.list_devices(session)
                live = [d.serial_number for d in listed if d.serial_number in serials]
                if live:
                    devices.unassign_devices(session, OPERATOR, live, now)
        self.record()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_no_answer_holds_a_value_set_by_another_server(
    engine: sa.Engine, vault: Vault, ops: list[tuple[str, int, list[int]]]
) -> None:
    world = World(engine, vault)
    for op, target, chosen in ops:
        world.apply(op, target, chosen)
    for client in world.clients:
        client.drain(2)
    for server_id, device in world.answers:
        shown = state(device)
        if shown == (None,) * len(STATE):
            continue  # only the inventory's own fields: what a server that lost it may see
        allowed = world.seen.get((server_id, device["serial_number"]), set())
        assert shown in allowed, (server_id, device, allowed)


def test_a_server_that_lost_a_device_never_sees_its_new_servers_profile(
    engine: sa.Engine, vault: Vault
) -> None:
    with unit_of_work(engine) as session:
        a = add_server(session, vault, "Lost A", NOW)
        b = add_server(session, vault, "Lost B", NOW)
        device_import.import_devices(session, OPERATOR, csv_of([serial(7, "L")]), NOW)
    client = WalkingClient(core_caller(engine, a, lambda: NOW + timedelta(minutes=5)))
    client.drain(10)
    later = NOW + timedelta(minutes=1)
    with unit_of_work(engine) as session:
        devices.assign_devices(session, OPERATOR, "Lost A", [serial(7, "L")], later)
        devices.assign_devices(session, OPERATOR, "Lost B", [serial(7, "L")], later)
        body = {"profile_name": "B", "url": "https://b.example", "devices": [serial(7, "L")]}
        defined = dep_profiles.define_profile(session, b, body, later)
    changes: list[dict[str, Any]] = []
    caller = core_caller(engine, a, lambda: later)
    page = caller("sync", {"cursor": client.cursor})
    changes.extend(page["devices"])
    assert [c["op_type"] for c in changes] == ["added", "deleted"]
    for change in changes:
        assert defined["profile_uuid"] not in change.values()
        assert "device_assigned_date" not in change and "profile_status" not in change

