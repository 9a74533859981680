"""mdmServers, orgDevices and orgDeviceActivities through the real Apple-port listener: Apple's
documents, absolute links, paging, sparse fieldsets, and moves an MDM server's sync sees."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from core.devices import csv_import, inventory
from core.models import Device
from core.tokens import servers as core_servers
from tests.asm_support import ApplePort, apple_port
from tests.dep_client import add_server as link_with_token
from tests.dep_client import session_key
from tests.dep_devices_client import NanoDep
from tests.devices_support import OPERATOR, csv_of, serial

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CLASSIC = {"serverName", "serverType", "createdDateTime", "updatedDateTime"}


@pytest.fixture
def port(database_url: str, tmp_path: Path) -> Iterator[ApplePort]:
    with apple_port(database_url, tmp_path) as running:
        yield running


def _get(port: ApplePort, token: str, path: str, **query: str) -> Any:
    status, _, body = port.call("GET", path, token=token, query=query or None)
    assert status == 200, body
    return body


def test_mdm_servers_in_apple_shape(port: ApplePort) -> None:
    jamf, mosyle = port.servers("Jamf", "Mosyle")
    port.devices(3)
    with port.ctx.unit_of_work() as session:
        inventory.assign_devices(session, OPERATOR, "Jamf", [serial(0), serial(1)], port.clock())
        inventory.set_default(session, OPERATOR, "ipad", "Jamf", port.clock())
        core_servers.edit_server(session, OPERATOR, "Mosyle", now=port.clock(),
                                 release_devices=False)  # fmt: skip
    token = port.token(port.account())
    listed = _get(port, token, "/v1/mdmServers")
    assert [s["attributes"]["serverName"] for s in listed["data"]] == ["Jamf", "Mosyle"]
    first = listed["data"][0]
    assert (first["type"], first["id"]) == ("mdmServers", f"{jamf:032X}")
    assert set(first["attributes"]) == CLASSIC  # ASM-API.md §11 item 15
    assert ISO.fullmatch(first["attributes"]["createdDateTime"])
    assert first["relationships"]["devices"]["links"]["self"] == (
        f"{port.url}/v1/mdmServers/{jamf:032X}/relationships/devices"
    )
    assert listed["links"] == {"self": f"{port.url}/v1/mdmServers"}
    assert listed["meta"] == {"paging": {"limit": 100}}
    chosen = _get(port, token, "/v1/mdmServers", **{"fields[mdmServers]": "deviceCount,status"})
    assert [s["attributes"] for s in chosen["data"]] == [
        {"deviceCount": 2, "status": "ACTIVE"}, {"deviceCount": 0, "status": "ACTIVE"}
    ]  # fmt: skip
    assert "relationships" not in chosen["data"][0]

    one = _get(port, token, f"/v1/mdmServers/{mosyle:032X}")
    attributes = one["data"]["attributes"]
    assert attributes["enableMdmDisownFlag"] is False and attributes["deviceCount"] == 0
    assert attributes["defaultProductFamilies"] == [] and attributes["serverType"] == "MDM"
    assert attributes["lastConnectedDateTime"] is None
    jamf_attributes = _get(port, token, f"/v1/mdmServers/{jamf:032X}")["data"]["attributes"]
    assert jamf_attributes["defaultProductFamilies"] == ["IPAD"]
    assert one["links"]["self"] == f"{port.url}/v1/mdmServers/{mosyle:032X}"

    status, _, missing = port.call("GET", f"/v1/mdmServers/{0xABC:032X}", token=token)
    assert status == 404 and missing["errors"][0]["status"] == "404"
    assert missing["errors"][0]["code"] == "NOT_FOUND"
    bad = port.call("GET", "/v1/mdmServers", token=token, query={"fields[mdmServers]": "nope"})
    assert bad[0] == 400 and bad[2]["errors"][0]["source"] == {"parameter": "fields[mdmServers]"}
    assert port.call("GET", "/v1/mdmServers", token=token, query={"limit": "1001"})[0] == 400


def test_last_connected_is_the_dep_services_record_of_the_last_session(port: ApplePort) -> None:
    with port.ctx.unit_of_work() as session:
        creds = link_with_token(session, port.ctx.vault, "Fleet", port.clock(), actor="U1")
    session_key(port.url, creds, timestamp=str(int(port.clock().timestamp())))  # a DEP session
    token = port.token(port.account())
    (server,) = _get(port, token, "/v1/mdmServers", **{
        "fields[mdmServers]": "lastConnectedDateTime,lastConnectedIp"
    })["data"]  # fmt: skip
    assert ISO.fullmatch(server["attributes"]["lastConnectedDateTime"])
    assert server["attributes"]["lastConnectedIp"] == "127.0.0.1"


def test_devices_page_by_cursor_and_follow_next(port: ApplePort) -> None:
    (jamf,) = port.servers("Jamf")
    serials = port.devices(25)
    with port.ctx.unit_of_work() as session:
        inventory.assign_devices(session, OPERATOR, "Jamf", serials[:12], port.clock())
        inventory.release_devices(session, OPERATOR, [serials[24]], port.clock())
    token = port.token(port.account())
    seen, page = [], _get(port, token, "/v1/orgDevices", limit="10")
    while True:
        seen += [d["id"] for d in page["data"]]
        assert page["meta"]["paging"]["limit"] == 10
        if "next" not in page["links"]:
            assert "nextCursor" not in page["meta"]["paging"]
            break
        assert page["links"]["next"].startswith(f"{port.url}/v1/orgDevices?limit=10&cursor=")
        assert page["meta"]["paging"]["nextCursor"] in page["links"]["next"]
        page = _get(port, token, page["links"]["next"])
    assert seen == serials[:24]  # the released device is not listed
    device = _get(port, token, "/v1/orgDevices", limit="1")["data"][0]
    attributes = device["attributes"]
    assert attributes["serialNumber"] == device["id"] == serials[0]
    assert (attributes["status"], attributes["productFamily"]) == ("ASSIGNED", "iPad")
    assert attributes["releasedFromOrgDateTime"] is None
    assert ISO.fullmatch(attributes["addedToOrgDateTime"]) and attributes["deviceModel"]
    own = f"{port.url}/v1/orgDevices/{serials[0]}"
    assert device["relationships"]["assignedServer"]["links"] == {
        "self": f"{own}/relationships/assignedServer", "related": f"{own}/assignedServer"
    }  # fmt: skip
    # A client that resends `cursor=` on the original URL gets the same page.
    cursor = _get(port, token, "/v1/orgDevices", limit="10")["meta"]["paging"]["nextCursor"]
    again = _get(port, token, "/v1/orgDevices", limit="10", cursor=cursor)
    assert [d["id"] for d in again["data"]] == serials[10:20]
    sparse = _get(port, token, "/v1/orgDevices", **{"fields[orgDevices]": "status"})
    assert sparse["data"][0]["attributes"] == {"status": "ASSIGNED"}
    bad = port.call("GET", "/v1/orgDevices", token=token, query={"cursor": "!!"})
    assert bad[0] == 400 and bad[2]["errors"][0]["source"] == {"parameter": "cursor"}

    linkages = _get(port, token, f"/v1/mdmServers/{jamf:032X}/relationships/devices", limit="5")
    assert linkages["data"][0] == {"type": "orgDevices", "id": serials[0]}
    assert "cursor=" in linkages["links"]["next"]
    released = _get(port, token, f"/v1/orgDevices/{serials[24]}")["data"]["attributes"]
    assert ISO.fullmatch(released["releasedFromOrgDateTime"])


def test_a_device_and_its_assigned_server(port: ApplePort) -> None:
    (jamf,) = port.servers("Jamf")
    serials = port.devices(2)
    with port.ctx.unit_of_work() as session:
        inventory.assign_devices(session, OPERATOR, "Jamf", serials[:1], port.clock())
    token = port.token(port.account())
    linkage = _get(port, token, f"/v1/orgDevices/{serials[0]}/relationships/assignedServer")
    assert linkage["data"] == {"type": "mdmServers", "id": f"{jamf:032X}"}
    server = _get(port, token, f"/v1/orgDevices/{serials[0]}/assignedServer")
    assert server["data"]["attributes"]["serverName"] == "Jamf"
    assert server["links"]["self"] == f"{port.url}/v1/orgDevices/{serials[0]}/assignedServer"
    status, _, body = port.call(
        "GET", f"/v1/orgDevices/{serials[1]}/relationships/assignedServer", token=token
    )
    assert status == 404 and body["errors"][0]["detail"].endswith("not assigned to an MDM server")
    status, _, body = port.call("GET", "/v1/orgDevices/NOSUCHSERIAL1", token=token)
    assert (status, body["errors"][0]["title"]) == (404, "The specified resource doesn't exist")


def _activity(kind: str, devices: list[str], server: int | None) -> dict[str, Any]:
    relationships: dict[str, Any] = {
        "devices": {"data": [{"type": "orgDevices", "id": s} for s in devices]}
    }
    if server is not None:
        relationships["mdmServer"] = {"data": {"type": "mdmServers", "id": f"{server:032X}"}}
    return {"data": {"type": "orgDeviceActivities", "attributes": {"activityType": kind},
                     "relationships": relationships}}  # fmt: skip


def test_activities_move_devices_for_the_next_dep_sync(port: ApplePort) -> None:
    with port.ctx.unit_of_work() as session:
        creds = link_with_token(session, port.ctx.vault, "Jamf", port.clock(), actor="U1")
        jamf = core_servers.find_server(session, "Jamf").id
    assert jamf is not None
    serials = port.devices(6)
    client = NanoDep(port.url, creds)
    client.timestamp = str(int(port.clock().timestamp()))
    client.drain(100)
    assert client.devices == {}
    first = port.account()
    token = port.token(first)

    ask = _activity("ASSIGN_DEVICES", [*serials[:4], "NOSUCHSERIAL1", "bad!"], jamf)
    status, _, created = port.call("POST", "/v1/orgDeviceActivities", token=token, body=ask)
    assert status == 201, created
    attributes = created["data"]["attributes"]
    assert (attributes["status"], attributes["subStatus"]) == ("IN_PROGRESS", "SUBMITTED")
    assert created["links"]["self"] == f"{port.url}/v1/orgDeviceActivities"
    done = _get(port, token, f"/v1/orgDeviceActivities/{created['data']['id']}")["data"]
    assert done["attributes"]["status"] == "COMPLETED"
    assert done["attributes"]["subStatus"] == "COMPLETED_WITH_FAILURE"
    assert ISO.fullmatch(done["attributes"]["completedDateTime"])
    url = done["attributes"]["downloadUrl"]
    assert "response-content-disposition=attachment%3Bfilename%3D%22ABM-ActivityLog_" in url
    status, headers, log = port.call("GET", url)  # presigned: no Bearer
    assert status == 200 and headers["Content-Disposition"].startswith("attachment;filename=")
    rows = list(csv.DictReader(io.StringIO(log)))
    assert {r["Serial Number"]: r["Result"] for r in rows} == {
        **dict.fromkeys(serials[:4], "SUCCESS"), "NOSUCHSERIAL1": "FAILED", "bad!": "FAILED"
    }  # fmt: skip
    assert port.call("GET", url.replace("Signature=", "Signature=x"))[0] == 403
    port.clock.now += timedelta(hours=2)
    assert port.call("GET", url)[0] == 403  # expired
    token = port.token(port.account("later"))
    client.timestamp = str(int(port.clock().timestamp()))

    client.log.clear()
    client.drain(100)  # the MDM server's next sync sees the assignment
    assert sorted(client.devices) == serials[:4]
    unassign = _activity("UNASSIGN_DEVICES", [serials[0], serials[5]], jamf)
    status, _, created = port.call("POST", "/v1/orgDeviceActivities", token=token, body=unassign)
    assert status == 201
    client.drain(100)
    assert sorted(client.devices) == serials[1:4]
    with port.ctx.unit_of_work(readonly=True) as session:
        assert inventory.show_device(session, serials[1]).assigned_by == f"api:{first.client_id}"

    release = _activity("RELEASE_DEVICES", [serials[1]], None)
    status, _, refused = port.call("POST", "/v1/orgDeviceActivities", token=token, body=release)
    assert status == 403 and refused["errors"][0]["status"] == "403"
    business = port.token(port.account("vendor", "business"))
    status, _, _ = port.call("POST", "/v1/orgDeviceActivities", token=business, body=release)
    assert status == 201
    client.drain(100)
    assert sorted(client.devices) == serials[2:4]

    no_server = _activity("ASSIGN_DEVICES", serials[:1], 0xDEAD)
    status, _, body = port.call("POST", "/v1/orgDeviceActivities", token=token, body=no_server)
    assert status == 409 and body["errors"][0]["status"] == "409"
    status, _, body = port.call("POST", "/v1/orgDeviceActivities", token=token, body={"data": 1})
    assert status == 409 and body["errors"][0]["source"] == {"pointer": "/data/type"}


def test_device_pages_hold_across_imports_and_escape_text_as_json(port: ApplePort) -> None:
    serials = port.devices(6)  # C02000000000 … C02000000005
    odd = 'iPad "Air" \\ 11″ é'
    with port.ctx.unit_of_work() as session:
        session.execute(
            sa.update(Device).where(col(Device.serial_number) == serials[1])
            .values(model=odd, color="Rosé\tgold", order_number=None)
        )  # fmt: skip
    token = port.token(port.account())
    first = _get(port, token, "/v1/orgDevices", limit="3")
    # Imported between two pages: serials before the cursor stay unseen, later ones come once.
    before, after = serial(2, prefix="A02"), serial(9)
    with port.ctx.unit_of_work() as session:
        csv_import.import_devices(session, OPERATOR, csv_of([before, after]), port.clock())
    second = _get(port, token, first["links"]["next"])
    third = _get(port, token, second["links"]["next"])
    seen = [d["id"] for page in (first, second, third) for d in page["data"]]
    assert seen == [*serials, after] and "next" not in third["links"]

    attributes = first["data"][1]["attributes"]
    assert (attributes["deviceModel"], attributes["color"]) == (odd, "Rosé\tgold")
    assert "orderNumber" not in attributes and first["data"][0]["attributes"]["orderNumber"]
    single = _get(port, token, f"/v1/orgDevices/{serials[1]}")
    assert single["data"] == {
        **first["data"][1], "attributes": {**attributes, "releasedFromOrgDateTime": None}
    }  # fmt: skip
    assert single["links"] == {"self": f"{port.url}/v1/orgDevices/{serials[1]}"}
    sparse = _get(port, token, "/v1/orgDevices", limit="3", **{
        "fields[orgDevices]": "deviceModel,assignedServer,orderNumber"
    })  # fmt: skip
    assert [d["id"] for d in sparse["data"]] == [before, *serials[:2]]
    plain = {"deviceModel": "iPad Air", "orderNumber": "PO-1"}
    assert [d["attributes"] for d in sparse["data"]] == [plain, plain, {"deviceModel": odd}]
    assert all(set(d) == {"type", "id", "attributes", "relationships", "links"}
               for d in sparse["data"])  # fmt: skip
    bare = _get(port, token, f"/v1/orgDevices/{serials[0]}", **{"fields[orgDevices]": "color"})
    assert bare["data"]["attributes"] == {"color": "Space Gray"}
    assert "relationships" not in bare["data"]


def test_device_text_is_ascii_json_as_json_dumps_writes_it(port: ApplePort) -> None:
    (serial_number,) = port.devices(1)
    with port.ctx.unit_of_work() as session:
        session.execute(sa.update(Device).values(model='Mac "Studio" ☃\\', color="Ünïcode\n"))
    bearer = {"Authorization": f"Bearer {port.token(port.account())}"}
    request = urllib.request.Request(f"{port.url}/v1/orgDevices", headers=bearer)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    document = json.loads(raw)
    assert raw.isascii() and raw.decode() == json.dumps(document, separators=(",", ":"))
    assert document["data"][0]["attributes"]["deviceModel"] == 'Mac "Studio" ☃\\'
    assert document["data"][0]["id"] == serial_number
