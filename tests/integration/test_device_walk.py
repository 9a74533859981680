"""Property: whatever happens to devices between calls, a client that fetches until
`more_to_follow` is false and then syncs ends with exactly its server's current devices."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from core.db import unit_of_work
from core.dep import devices as dep_devices
from core.dep import profiles as dep_profiles
from core.dep.auth import DepError
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.models import Device
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import (
    OPERATOR,
    WalkingClient,
    add_server,
    core_caller,
    csv_of,
    serial,
)

SERVERS = 3
DEVICES = 12
_examples = itertools.count()

subsets = st.lists(st.integers(0, DEVICES - 1), min_size=1, max_size=5, unique=True)
servers_ = st.integers(0, SERVERS - 1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), servers_, subsets),
        st.tuples(st.just("unassign"), st.just(0), subsets),
        st.tuples(st.just("release"), st.just(0), subsets),
        st.tuples(st.just("disown"), servers_, subsets),
        st.tuples(st.just("profile"), servers_, subsets),
        st.tuples(st.just("clear"), servers_, subsets),
        st.tuples(st.just("reimport"), st.just(0), subsets),
        st.tuples(st.just("step"), servers_, st.lists(st.integers(1, 4), min_size=1, max_size=1)),
    ),
    max_size=40,
)


class World:
    """Servers, devices and one walking client per server, all in one fresh corner of the DB."""

    def __init__(self, engine: sa.Engine, vault: Vault) -> None:
        example = next(_examples)
        self.engine, self.now = engine, NOW
        self.serials = [serial(i, prefix=f"W{example:04d}") for i in range(DEVICES)]
        with unit_of_work(engine) as session:
            self.names = [f"walk {example} server {i}" for i in range(SERVERS)]
            self.ids = [add_server(session, vault, name, NOW) for name in self.names]
            device_import.import_devices(session, OPERATOR, csv_of(self.serials), NOW)
            self.profiles = [
                dep_profiles.define_profile(
                    session, sid, {"profile_name": f"p{sid}", "url": "https://x"}, NOW
                )["profile_uuid"]
                for sid in self.ids
            ]
        self.clients = [WalkingClient(core_caller(engine, sid, self.clock)) for sid in self.ids]

    def clock(self) -> datetime:
        return self.now

    def apply(self, op: str, target: int, picks: list[int]) -> None:
        self.now += timedelta(seconds=1)
        if op == "step":
            self.clients[target].step(picks[0])
            return
        chosen = [self.serials[i] for i in picks]
        sid, now = self.ids[target], self.now
        with unit_of_work(self.engine) as session:
            if op == "assign":
                devices.assign_devices(
                    session, OPERATOR, self.names[target], chosen, now, partial=True
                )
            elif op in ("unassign", "release", "reimport"):
                self._change_live(session, op, chosen)
            elif op == "disown":
                dep_devices.disown_devices(session, sid, {"devices": chosen}, now)
            elif op == "profile":
                body = {"profile_uuid": self.profiles[target], "devices": chosen}
                dep_profiles.assign_profile(session, sid, body, now)
            elif op == "clear":
                dep_profiles.clear_profiles(session, sid, {"devices": chosen}, now)

    def _change_live(self, session: Session, op: str, chosen: list[str]) -> None:
        live = session.exec(
            select(Device.serial_number).where(
                Device.serial_number.in_(chosen),  # type: ignore[attr-defined]
                Device.released_at.is_(None),  # type: ignore[union-attr]
            )
        ).all()
        if not live:
            return
        if op == "unassign":
            devices.unassign_devices(session, OPERATOR, live, self.now)
        elif op == "reimport":
            content = csv_of(list(live), model=f"Model {self.now.second}")
            device_import.import_devices(session, OPERATOR, content, self.now)
        else:
            devices.release_devices(session, OPERATOR, live, self.now)

    def truth(self, server_id: int) -> dict[str, tuple[str | None, str, str]]:
        with unit_of_work(self.engine, readonly=True) as session:
            rows = session.exec(select(Device).where(Device.server_id == server_id)).all()
            return {d.serial_number: (d.profile_uuid, d.profile_status, d.model) for d in rows}


def view(client: WalkingClient) -> dict[str, tuple[str | None, str, str]]:
    return {
        s: (d.get("profile_uuid"), d["profile_status"], d["model"])
        for s, d in client.devices.items()
    }


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, final_limit=st.sampled_from([1, 2, 3, 1000]))
def test_fetch_then_sync_ends_with_the_servers_devices(
    engine: sa.Engine, vault: Vault, ops: list[tuple[str, int, list[int]]], final_limit: int
) -> None:
    world = World(engine, vault)
    for op, target, picks in ops:
        try:
            world.apply(op, target, picks)
        except DepError as exc:  # a client may walk into nothing more than a used-up fetch
            raise AssertionError(exc.code) from exc
    for index, client in enumerate(world.clients):
        client.drain(final_limit)
        assert view(client) == world.truth(world.ids[index])
