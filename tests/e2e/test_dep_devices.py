"""The device endpoints through the real DEP listener, walked by a NanoDEP-like client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import HttpServer, Listener, start_in_background
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.settings import Settings
from core.tokens import servers
from tests.dep_client import Creds, add_server
from tests.dep_devices_client import NanoDep
from tests.devices_support import OPERATOR, csv_of, serial
from tests.slack_harness import Clock

ADMIN = "UADMIN01"


@dataclass
class Service:
    """The DEP app on its own listener, and its clock."""

    ctx: AppContext
    clock: Clock
    url: str
    server: HttpServer

    def link(self, name: str) -> Creds:
        with self.ctx.unit_of_work() as session:
            return add_server(session, self.ctx.vault, name, self.clock(), actor=ADMIN)

    def client(self, creds: Creds) -> NanoDep:
        client = NanoDep(self.url, creds)
        client.timestamp = str(int(self.clock().timestamp()))
        return client

    def truth(self, name: str) -> dict[str, str | None]:
        with self.ctx.unit_of_work(readonly=True) as session:
            return {
                v.serial_number: v.profile_uuid
                for v in devices.list_devices(session, server_name=name)
            }


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    settings = Settings(
        mdmbot_database_url=database_url,
        mdmbot_data_dir=tmp_path,
        mdmbot_secret_key="k" * 40,
        _env_file=None,  # type: ignore[call-arg]
    )
    clock = Clock()
    ctx = AppContext(settings, clock=clock)
    server = start_in_background(
        Listener("dep-devices-test", "127.0.0.1", 0, build_dep_app(ctx)), 4
    )
    yield Service(ctx, clock, f"http://127.0.0.1:{server.port}", server)
    server.close()
    ctx.engine.dispose()


def held(client: NanoDep) -> dict[str, str | None]:
    return {s: d.get("profile_uuid") for s, d in client.devices.items()}


def test_nanodep_fetches_is_told_exhausted_then_syncs(service: Service) -> None:
    jamf, mosyle = service.link("Jamf"), service.link("Mosyle")
    now = service.clock()
    with service.ctx.unit_of_work() as session:
        device_import.import_devices(
            session, OPERATOR, csv_of([serial(i) for i in range(250)]), now
        )
        devices.assign_devices(session, OPERATOR, "Jamf", [serial(i) for i in range(230)], now)
        devices.assign_devices(
            session, OPERATOR, "Mosyle", [serial(i) for i in range(230, 250)], now
        )
    client, other = service.client(jamf), service.client(mosyle)
    client.drain(100)
    assert client.log == ["fetch 100", "fetch 100", "fetch 30", "exhausted", "sync 0"]
    assert held(client) == service.truth("Jamf") and len(client.devices) == 230
    assert client.devices[serial(0)]["device_assigned_date"].endswith("Z")
    other.drain(1000)

    # The IT team reassigns, unassigns and re-imports; the MDM server assigns a profile and
    # releases two devices (its release switch is on).
    with service.ctx.unit_of_work() as session:
        devices.assign_devices(session, OPERATOR, "Mosyle", [serial(i) for i in range(5)], now)
        devices.unassign_devices(session, OPERATOR, [serial(5)], now)
        device_import.import_devices(session, OPERATOR, csv_of([serial(6)], model="iPad Pro"), now)
    status, profile = client.request(
        "POST", "/profile", {"profile_name": "Students", "url": "https://mdm.example/enroll"}
    )
    assert status == 200, profile
    status, assigned = client.request(
        "PUT",
        "/profile/devices",
        {"profile_uuid": profile["profile_uuid"], "devices": [serial(7), serial(8), serial(240)]},
    )
    assert assigned["devices"] == {
        serial(7): "SUCCESS",
        serial(8): "SUCCESS",
        serial(240): "NOT_ACCESSIBLE",
    }
    status, released = client.request(
        "POST", "/devices/disown", {"devices": [serial(9), serial(10)]}
    )
    assert released == {"devices": {serial(9): "SUCCESS", serial(10): "SUCCESS"}}
    client.log.clear()
    client.drain(4)
    assert client.log[0] == "sync 4" and client.log[-1].startswith("sync")
    assert held(client) == service.truth("Jamf") and len(client.devices) == 222
    assert client.devices[serial(7)]["profile_uuid"] == profile["profile_uuid"]
    assert client.devices[serial(6)]["model"] == "iPad Pro"
    other.drain(3)
    assert held(other) == service.truth("Mosyle") and len(other.devices) == 25

    # A week later the stored cursor has expired: the client fetches everything again.
    service.clock.now += timedelta(days=8)
    client.timestamp, client.key = str(int(service.clock().timestamp())), None
    client.log.clear()
    client.drain(1000)
    assert client.log[:2] == ["EXPIRED_CURSOR", "fetch 222"]
    assert held(client) == service.truth("Jamf")


def test_refusals_through_the_listener(service: Service) -> None:
    jamf, mosyle = service.link("Jamf"), service.link("Mosyle")
    now = service.clock()
    with service.ctx.unit_of_work() as session:
        device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), now)
        devices.assign_devices(session, OPERATOR, "Jamf", [serial(1)], now)
        devices.assign_devices(session, OPERATOR, "Mosyle", [serial(2)], now)
        servers.edit_server(session, OPERATOR, "Mosyle", now=now, release_devices=False)
    client, other = service.client(jamf), service.client(mosyle)
    fetched = client.request("POST", "/server/devices", {})[1]
    cases: list[tuple[NanoDep, str, str, Any, int, str]] = [
        (client, "POST", "/devices/sync", {}, 400, "CURSOR_REQUIRED"),
        (other, "POST", "/devices/sync", {"cursor": fetched["cursor"]}, 400, "INVALID_CURSOR"),
        (client, "POST", "/server/devices", {"cursor": fetched["cursor"]}, 400, "EXHAUSTED_CURSOR"),
        (other, "POST", "/devices/disown", {"devices": [serial(2)]}, 403, "ACCESS_DENIED"),
        (client, "POST", "/devices", {"devices": []}, 400, "DEVICE_ID_REQUIRED"),
        (client, "GET", "/profile?profile_uuid=NOPE", None, 400, "NOT_FOUND"),
        (
            client,
            "PUT",
            "/profile/devices",
            {"profile_uuid": "NOPE", "devices": ["X"]},
            404,
            "NOT_FOUND",
        ),
        (
            client,
            "POST",
            "/profile/devices",
            {"devices": [serial(1)]},
            400,
            "PROFILE_UUID_REQUIRED",
        ),
        (
            client,
            "POST",
            "/profile",
            {"profile_name": "x" * 126, "url": "u"},
            400,
            "CONFIG_NAME_INVALID",
        ),
    ]
    for who, method, path, body, status, code in cases:
        assert who.request(method, path, body) == (status, code), (path, code)
    details = client.request("POST", "/devices", {"devices": [serial(1), serial(2)]})[1]
    assert details["devices"][serial(2)] == {"response_status": "NOT_ACCESSIBLE"}
    assert details["devices"][serial(1)]["response_status"] == "SUCCESS"
    client.key = "not-a-session"
    status, _ = client._send("POST", "/server/devices", {})
    assert status == 401
    assert client._send("POST", "/server/devices", None)[0] == 401
    client.key = None
    client.request("GET", "/account")
    assert client._send("POST", "/devices", None) == (400, "DEVICE_ID_REQUIRED")
    raw = client._raw("POST", "/devices", b"{not json")
    assert raw == (400, "MALFORMED_REQUEST_BODY")
    assert client._send("GET", "/devices/sync", None)[0] == 405
    with service.ctx.unit_of_work(readonly=True) as session:
        assert devices.show_device(session, serial(2)).released_at is None
