"""Devices end to end in core: import, assign, defaults, release, and the DEP device endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.db import unit_of_work
from core.dep import devices as dep_devices
from core.dep import profiles as dep_profiles
from core.dep.auth import DepError
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.devices import unlink
from core.errors import InvalidInput, PermissionDenied
from core.models import AuditEvent, Device, DeviceChange
from core.people.persons import grant_role
from core.roles import Actor, Role
from core.tokens import servers
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import (
    HEADER,
    KEY,
    OPERATOR,
    add_server,
    csv_of,
    serial,
)

LATER = NOW + timedelta(hours=1)


def sync_ops(session: Session, server_id: int, cursor: str) -> list[tuple[str, str]]:
    page = dep_devices.sync_devices(session, KEY, server_id, {"cursor": cursor}, LATER)
    return [(d["serial_number"], d["op_type"]) for d in page["devices"]]


def test_import_creates_then_updates_without_duplicates(session: Session) -> None:
    content = csv_of([serial(1), serial(2)])
    summary = device_import.import_devices(session, OPERATOR, content, NOW, source="a.csv")
    assert (summary.created, summary.updated, summary.unchanged) == (2, 0, 0)
    again = content.replace(b"Space Gray", b"Silver", 1)
    summary = device_import.import_devices(session, OPERATOR, again, LATER)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 1)
    rows = session.exec(select(Device).order_by(Device.serial_number)).all()
    assert [(d.serial_number, d.color) for d in rows] == [
        (serial(1), "Silver"),
        (serial(2), "Space Gray"),
    ]
    assert [a.action for a in session.exec(select(AuditEvent))] == ["devices.import"] * 2


def test_a_bad_csv_imports_nothing_and_names_every_bad_row(session: Session) -> None:
    lines = [
        HEADER,
        f"{serial(1)},iPad Air,d,Blue,iPad,iPadOS,,",
        "SHORT,iPad Air,d,Blue,iPad,iPadOS,,",
        f"{serial(3)},iPad Air,d,Blue,Toaster,iPadOS,,",
        "",
        f"{serial(4)},iPad Air,d,Blue,iPad,Windows,,",
        f"{serial(1).lower()},iPad Air,d,Blue,iPad,iPadOS,,",
        f"{serial(5)},too,few",
    ]
    with pytest.raises(device_import.ImportRefused) as caught:
        device_import.import_devices(session, OPERATOR, "\n".join(lines).encode(), NOW)
    problems = dict(caught.value.problems)
    assert sorted(problems) == [3, 4, 6, 7, 8]
    assert "SHORT" in problems[3] and "serial number" in problems[3]
    assert "Toaster" in problems[4]
    assert "Windows" in problems[6]
    assert "already on line 2" in problems[7]
    assert "3 values for 8 columns" in problems[8]
    assert "line 4:" in caught.value.message
    assert session.exec(select(Device)).all() == []


def test_a_csv_without_the_required_columns_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInput, match=r"missing column.*device_family, os"):
        device_import.import_devices(
            session, OPERATOR, b"serial_number,model,description,color\n", NOW
        )


def test_imported_devices_go_to_their_family_default(session: Session, vault: Vault) -> None:
    ipads = add_server(session, vault, "iPads MDM", NOW)
    devices.set_default(session, OPERATOR, "ipad", "iPads MDM", NOW)
    content = csv_of([serial(1)]) + csv_of([serial(2)], "Mac", "OSX").split(b"\n", 1)[1]
    summary = device_import.import_devices(session, OPERATOR, content, NOW)
    assert summary.to_default == {"iPads MDM": 1}
    assert devices.show_device(session, serial(1)).server == "iPads MDM"
    assert devices.show_device(session, serial(2)).server is None
    assert [v.serial_number for v in devices.list_devices(session, unassigned=True)] == [serial(2)]
    assert devices.list_defaults(session)[0] == ("iPad", "iPads MDM")
    page = dep_devices.fetch_devices(session, KEY, ipads, {}, LATER)
    assert [d["serial_number"] for d in page["devices"]] == [serial(1)]
    assert page["devices"][0]["device_assigned_date"] == "2026-11-27T14:03:34Z"


def test_reassigning_moves_a_device_between_servers_syncs(session: Session, vault: Vault) -> None:
    first = add_server(session, vault, "First", NOW)
    second = add_server(session, vault, "Second", NOW)
    device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    devices.assign_devices(session, OPERATOR, "First", [serial(1), serial(2)], NOW)
    c1 = dep_devices.fetch_devices(session, KEY, first, {}, LATER)["cursor"]
    c2 = dep_devices.fetch_devices(session, KEY, second, {}, LATER)["cursor"]
    result = devices.assign_devices(session, OPERATOR, "second", [f" {serial(1).lower()} "], NOW)
    assert result.assigned == [serial(1)]
    assert sync_ops(session, first, c1) == [(serial(1), "deleted")]
    assert sync_ops(session, second, c2) == [(serial(1), "added")]
    devices.unassign_devices(session, OPERATOR, [serial(2)], NOW)
    assert sync_ops(session, first, c1) == [(serial(1), "deleted"), (serial(2), "deleted")]


def test_assigning_unknown_or_released_serials(session: Session, vault: Vault) -> None:
    add_server(session, vault, "First", NOW)
    device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    devices.release_devices(session, OPERATOR, [serial(2)], NOW)
    with pytest.raises(InvalidInput, match=r"Nothing was changed.*unknown: C02000000009.*released"):
        devices.assign_devices(session, OPERATOR, "First", [serial(1), serial(9), serial(2)], NOW)
    assert devices.show_device(session, serial(1)).server is None
    result = devices.assign_devices(
        session, OPERATOR, "First", [serial(1), serial(9), serial(2), "x"], NOW, partial=True
    )
    assert (result.assigned, result.unknown, result.released, result.invalid) == (
        [serial(1)],
        [serial(9)],
        [serial(2)],
        ["x"],
    )


def test_fetch_pages_exhausted_cursor_then_sync(engine: sa.Engine, vault: Vault) -> None:
    with unit_of_work(engine) as session:
        server = add_server(session, vault, "Jamf", NOW)
        device_import.import_devices(session, OPERATOR, csv_of([serial(i) for i in range(25)]), NOW)
        devices.assign_devices(session, OPERATOR, "Jamf", [serial(i) for i in range(25)], NOW)
    with unit_of_work(engine) as session:
        pages = []
        body: dict[str, Any] = {"limit": 10}
        while True:
            page = dep_devices.fetch_devices(session, KEY, server, body, LATER)
            pages.append([d["serial_number"] for d in page["devices"]])
            body = {"limit": 10, "cursor": page["cursor"]}
            if not page["more_to_follow"]:
                break
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [s for p in pages for s in p] == [serial(i) for i in range(25)]
        with pytest.raises(DepError) as exhausted:
            dep_devices.fetch_devices(session, KEY, server, body, LATER)
        assert (exhausted.value.code, exhausted.value.status) == ("EXHAUSTED_CURSOR", 400)
        assert dep_devices.sync_devices(session, KEY, server, body, LATER)["devices"] == []
        assert page["fetched_until"] == "2026-11-27T15:03:34Z"


def test_sync_cursor_errors(session: Session, vault: Vault) -> None:
    mine = add_server(session, vault, "Mine", NOW)
    other = add_server(session, vault, "Other", NOW)
    cursor = dep_devices.fetch_devices(session, KEY, mine, {}, NOW)["cursor"]

    def code(server: int, body: object, now: Any = NOW) -> str:
        with pytest.raises(DepError) as caught:
            dep_devices.sync_devices(session, KEY, server, body, now)
        return caught.value.code

    assert code(mine, {}) == "CURSOR_REQUIRED"
    assert code(mine, {"cursor": ""}) == "CURSOR_REQUIRED"
    assert code(other, {"cursor": cursor}) == "INVALID_CURSOR"
    assert code(mine, {"cursor": cursor[:-2] + "AA"}) == "INVALID_CURSOR"
    assert code(mine, {"cursor": "garbage"}) == "INVALID_CURSOR"
    assert code(mine, {"cursor": cursor}, NOW + timedelta(days=7, seconds=1)) == "EXPIRED_CURSOR"
    assert code(mine, ["not", "an", "object"]) == "MALFORMED_REQUEST_BODY"
    forged = dep_devices.fetch_devices(session, b"x" * 32, other, {}, NOW)["cursor"]
    assert code(other, {"cursor": forged}) == "INVALID_CURSOR"
    fresh = dep_devices.sync_devices(
        session, KEY, mine, {"cursor": cursor}, NOW + timedelta(days=6)
    )
    assert fresh["more_to_follow"] is False


def test_details_show_only_the_servers_own_devices(session: Session, vault: Vault) -> None:
    mine = add_server(session, vault, "Mine", NOW)
    add_server(session, vault, "Other", NOW)
    device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    devices.assign_devices(session, OPERATOR, "Mine", [serial(1)], NOW)
    devices.assign_devices(session, OPERATOR, "Other", [serial(2)], NOW)
    answer = dep_devices.device_details(session, mine, {"devices": [serial(1), serial(2)]})
    assert answer["devices"][serial(2)] == {"response_status": "NOT_ACCESSIBLE"}
    assert answer["devices"][serial(1)]["response_status"] == "SUCCESS"
    assert answer["devices"][serial(1)]["profile_status"] == "empty"
    assert "" not in answer["devices"][serial(1)].values()
    with pytest.raises(DepError, match="DEVICE_ID_REQUIRED"):
        dep_devices.device_details(session, mine, {"devices": []})


def test_disown_obeys_the_release_switch(session: Session, vault: Vault) -> None:
    allowed = add_server(session, vault, "Allowed", NOW)
    barred = add_server(session, vault, "Barred", NOW, release=False)
    device_import.import_devices(session, OPERATOR, csv_of([serial(i) for i in range(3)]), NOW)
    devices.assign_devices(session, OPERATOR, "Allowed", [serial(0), serial(1)], NOW)
    devices.assign_devices(session, OPERATOR, "Barred", [serial(2)], NOW)
    cursor = dep_devices.fetch_devices(session, KEY, allowed, {}, NOW)["cursor"]
    with pytest.raises(DepError) as denied:
        dep_devices.disown_devices(session, barred, {"devices": [serial(2)]}, LATER)
    assert (denied.value.code, denied.value.status) == ("ACCESS_DENIED", 403)
    assert devices.show_device(session, serial(2)).released_at is None
    answer = dep_devices.disown_devices(
        session, allowed, {"devices": [serial(0), serial(2)]}, LATER
    )
    assert answer == {"devices": {serial(0): "SUCCESS", serial(2): "NOT_ACCESSIBLE"}}
    assert sync_ops(session, allowed, cursor) == [(serial(0), "deleted")]
    assert devices.show_device(session, serial(0)).released_at == LATER
    listed = [v.serial_number for v in devices.list_devices(session)]
    assert listed == [serial(1), serial(2)]
    servers.edit_server(session, OPERATOR, "Barred", now=LATER, release_devices=True)
    answer = dep_devices.disown_devices(session, barred, {"devices": [serial(2)]}, LATER)
    assert answer == {"devices": {serial(2): "SUCCESS"}}


def test_only_an_administrator_releases_devices(session: Session) -> None:
    device_import.import_devices(session, OPERATOR, csv_of([serial(1)]), NOW)
    grant_role(session, OPERATOR, "U0SITE", Role.SITE_MANAGER, NOW)
    grant_role(session, OPERATOR, "U0ADMIN", Role.ADMINISTRATOR, NOW)
    with pytest.raises(PermissionDenied, match="Only an Administrator can release devices"):
        devices.release_devices(session, Actor("U0SITE"), [serial(1)], NOW)
    assert devices.release_devices(session, Actor("U0ADMIN"), [serial(1)], NOW) == [serial(1)]
    with pytest.raises(InvalidInput, match=r"Nothing was released.*released: C02000000001"):
        devices.release_devices(session, Actor("U0ADMIN"), [serial(1)], NOW)
    actions = [a.action for a in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[-1] == "devices.release"
    # Re-importing the inventory skips the released device (with a count) and imports the rest.
    again = device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    assert (again.created, again.updated, again.unchanged, again.released) == (1, 0, 0, 1)
    assert devices.show_device(session, serial(1)).released_at == NOW
    assert [v.serial_number for v in devices.list_devices(session)] == [serial(2)]


def test_a_csv_with_semicolons_or_tabs_imports(session: Session) -> None:
    for separator, serials in ((";", [serial(1), serial(2)]), ("\t", [serial(3)])):
        text = csv_of(serials).decode().replace(",", separator).encode()
        summary = device_import.import_devices(session, OPERATOR, text, NOW)
        assert summary.created == len(serials)
    assert devices.show_device(session, serial(2)).model == devices.show_device(
        session, serial(1)
    ).model


@pytest.mark.parametrize(
    "value", ["Cart\x1b]0;owned\x07", "Cart\u202eBA", "Cart\x1b[2J", "Cart\u2028x"]
)
def test_control_and_bidi_characters_are_refused_by_line(session: Session, value: str) -> None:
    text = csv_of([serial(1), serial(2)]).decode().splitlines()
    text[2] = text[2].replace(text[2].split(",")[2], value, 1)
    with pytest.raises(device_import.ImportRefused) as refused:
        device_import.import_devices(session, OPERATOR, "\n".join(text).encode(), NOW)
    assert refused.value.problems == [
        (3, "description holds a control or bidirectional formatting character")
    ]
    assert devices.list_devices(session) == []


def test_profiles_define_get_assign_clear(session: Session, vault: Vault) -> None:
    mine = add_server(session, vault, "Mine", NOW)
    other = add_server(session, vault, "Other", NOW)
    device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    devices.assign_devices(session, OPERATOR, "Mine", [serial(1)], NOW)
    cursor = dep_devices.fetch_devices(session, KEY, mine, {}, NOW)["cursor"]
    profile = {"profile_name": "Students", "url": "https://mdm.example.edu/enroll"}
    defined = dep_profiles.define_profile(
        session, mine, profile | {"devices": [serial(1), serial(2)]}, LATER
    )
    uuid = defined["profile_uuid"]
    assert defined["devices"] == {serial(1): "SUCCESS", serial(2): "NOT_ACCESSIBLE"}
    assert dep_profiles.get_profile(session, mine, uuid) == profile | {"profile_uuid": uuid}
    with pytest.raises(DepError, match="NOT_FOUND"):
        dep_profiles.get_profile(session, other, uuid)
    shown = dep_devices.device_details(session, mine, {"devices": [serial(1)]})["devices"]
    assert shown[serial(1)]["profile_uuid"] == uuid
    assert shown[serial(1)]["profile_assign_time"] == "2026-11-27T15:03:34Z"
    assigned = dep_profiles.assign_profile(
        session, mine, {"profile_uuid": uuid, "devices": [serial(1)]}, LATER
    )
    assert assigned == {"profile_uuid": uuid, "devices": {serial(1): "SUCCESS"}}
    cleared = dep_profiles.clear_profiles(session, mine, {"devices": [serial(1)]}, LATER)
    assert cleared == {"devices": {serial(1): "SUCCESS"}}
    assert sync_ops(session, mine, cursor) == [(serial(1), "modified")] * 3
    assert devices.show_device(session, serial(1)).profile_status == "removed"


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"profile_name": "x" * 126}, "CONFIG_NAME_INVALID", 400),
        ({"profile_name": None}, "CONFIG_NAME_INVALID", 400),
        ({"url": "u" * 2001}, "CONFIG_URL_INVALID", 400),
        ({"department": "d" * 126}, "DEPARTMENT_INVALID", 400),
        ({"org_magic": "m" * 257}, "MAGIC_INVALID", 400),
        ({"support_email_address": "e" * 251}, "SUPPORT_EMAIL_INVALID", 400),
        ({"support_phone_number": "1" * 51}, "SUPPORT_PHONE_INVALID", 400),
        ({"is_mdm_removable": False, "is_supervised": False}, "FLAGS_INVALID", 400),
    ],
)
def test_profile_field_limits(
    session: Session, vault: Vault, change: dict[str, Any], code: str, status: int
) -> None:
    mine = add_server(session, vault, "Mine", NOW)
    body = {"profile_name": "Students", "url": "https://mdm.example.edu/enroll"} | change
    with pytest.raises(DepError) as caught:
        dep_profiles.define_profile(session, mine, body, NOW)
    assert (caught.value.code, caught.value.status) == (code, status)
    assert (
        dep_profiles.define_profile(
            session,
            mine,
            {"profile_name": "ok", "url": "u", "is_mdm_removable": False, "is_supervised": True},
            NOW,
        )["devices"]
        == {}
    )


def test_assign_profile_errors(session: Session, vault: Vault) -> None:
    mine = add_server(session, vault, "Mine", NOW)
    with pytest.raises(DepError, match="PROFILE_UUID_REQUIRED"):
        dep_profiles.assign_profile(session, mine, {"devices": [serial(1)]}, NOW)
    with pytest.raises(DepError) as caught:
        dep_profiles.assign_profile(session, mine, {"profile_uuid": "NOPE", "devices": ["A"]}, NOW)
    assert (caught.value.code, caught.value.status) == ("NOT_FOUND", 404)


def test_removing_a_server_moves_devices_to_defaults(session: Session, vault: Vault) -> None:
    gone = add_server(session, vault, "Gone", NOW)
    fallback = add_server(session, vault, "Fallback", NOW)
    content = csv_of([serial(1)]) + csv_of([serial(2)], "Mac", "OSX").split(b"\n", 1)[1]
    device_import.import_devices(session, OPERATOR, content, NOW)
    devices.assign_devices(session, OPERATOR, "Gone", [serial(1), serial(2)], NOW)
    devices.set_default(session, OPERATOR, "iPad", "Fallback", NOW)
    devices.set_default(session, OPERATOR, "Mac", "Gone", NOW)
    unlink.remove_server(session, OPERATOR, "Gone", LATER)
    assert devices.show_device(session, serial(1)).server == "Fallback"
    assert devices.show_device(session, serial(2)).server is None
    assert devices.list_defaults(session)[:4] == [
        ("iPad", "Fallback"),
        ("iPhone", None),
        ("iPod", None),
        ("Mac", None),
    ]
    ops = session.exec(
        select(DeviceChange.server_id, DeviceChange.op_type).order_by(DeviceChange.id)
    ).all()
    assert ops[-3:] == [(gone, "deleted"), (fallback, "added"), (gone, "deleted")]
    assert devices.device_counts(session) == {fallback: 1}


def test_reimport_sends_unassigned_devices_to_a_new_default(session: Session, vault: Vault) -> None:
    carts = add_server(session, vault, "Carts", NOW)
    device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    devices.assign_devices(session, OPERATOR, "Carts", [serial(2)], NOW)
    cursor = dep_devices.fetch_devices(session, KEY, carts, {}, NOW)["cursor"]
    devices.set_default(session, OPERATOR, "iPad", "Carts", NOW)
    summary = device_import.import_devices(session, OPERATOR, csv_of([serial(1), serial(2)]), NOW)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 1)
    assert summary.to_default == {"Carts": 1}
    assert sync_ops(session, carts, cursor) == [(serial(1), "added")]
    audit = session.exec(select(AuditEvent).where(AuditEvent.action == "devices.import")).all()
    assert '"to_default": {"Carts": 1}' in audit[-1].detail
