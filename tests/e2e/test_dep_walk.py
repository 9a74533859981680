"""Property through the real listener: whatever happens between a NanoDEP-like client's calls,
fetching until told EXHAUSTED_CURSOR and then syncing ends with exactly its server's devices."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.devices import csv_import as device_import
from core.devices import inventory as devices
from tests.dep_devices_client import NanoDep
from tests.devices_support import OPERATOR, csv_of, serial
from tests.e2e.test_dep_devices import Service, held, service  # noqa: F401 (fixture)

DEVICES, SERVERS = 10, 2
_examples = itertools.count()
picks = st.lists(st.integers(0, DEVICES - 1), min_size=1, max_size=4, unique=True)
targets = st.integers(0, SERVERS - 1)
steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["assign", "unassign", "release"]), targets, picks),
        st.tuples(st.sampled_from(["disown", "profile", "clear"]), targets, picks),
        st.tuples(st.just("step"), targets, st.lists(st.integers(1, 3), min_size=1, max_size=1)),
    ),
    max_size=25,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=steps)
def test_any_interleaving_ends_in_agreement(
    service: Service,  # noqa: F811
    ops: list[tuple[str, int, list[int]]],
) -> None:
    example = next(_examples)
    names = [f"walk {example} {i}" for i in range(SERVERS)]
    serials = [serial(i, prefix=f"H{example:04d}") for i in range(DEVICES)]
    clients = [service.client(service.link(name)) for name in names]
    now = service.clock()
    with service.ctx.unit_of_work() as session:
        device_import.import_devices(session, OPERATOR, csv_of(serials), now)
    profiles = [
        c.request("POST", "/profile", {"profile_name": "p", "url": "u"})[1]["profile_uuid"]
        for c in clients
    ]
    released: set[str] = set()
    for op, target, chosen in ops:
        client, which = clients[target], [serials[i] for i in chosen]
        if op == "step":
            client.step(chosen[0])
        elif op in ("assign", "unassign", "release"):
            live = [s for s in which if s not in released]
            if not live:
                continue
            with service.ctx.unit_of_work() as session:
                if op == "assign":
                    devices.assign_devices(session, OPERATOR, names[target], live, now)
                elif op == "unassign":
                    devices.unassign_devices(session, OPERATOR, live, now)
                else:
                    devices.release_devices(session, OPERATOR, live, now)
                    released.update(live)
        elif op == "disown":
            answer = client.request("POST", "/devices/disown", {"devices": which})[1]
            released.update(s for s, status in answer["devices"].items() if status == "SUCCESS")
        elif op == "profile":
            body = {"profile_uuid": profiles[target], "devices": which}
            assert client.request("PUT", "/profile/devices", body)[0] == 200
        else:
            assert client.request("DELETE", "/profile/devices", {"devices": which})[0] == 200
    for name, client in zip(names, clients, strict=True):
        client.drain(2)
        assert held(client) == service.truth(name)
        assert "exhausted" in client.log


__all__ = ["NanoDep"]
