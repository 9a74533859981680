"""Enrollment profiles a token holder defines: Apple's documented keys only, a size cap, and a
cap on the number kept per server."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, col, func, select

from core.dep import profiles as dep_profiles
from core.dep.auth import DepError
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.models import Profile
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import OPERATOR, add_server, csv_of, serial

BASE = {"profile_name": "Students", "url": "https://mdm.example/enroll"}


def _count(session: Session, server_id: int) -> int:
    return int(
        session.exec(select(func.count()).where(col(Profile.server_id) == server_id)).one()
    )


def _refused(session: Session, server_id: int, body: dict[str, Any]) -> tuple[int, str]:
    with pytest.raises(DepError) as refused:
        dep_profiles.define_profile(session, server_id, body, NOW)
    return refused.value.status, refused.value.code


def test_apples_documented_keys_are_kept_and_echoed(session: Session, vault: Vault) -> None:
    sid = add_server(session, vault, "Jamf", NOW)
    body = BASE | {
        "allow_pairing": True,
        "is_supervised": True,
        "is_multi_user": False,
        "is_mandatory": True,
        "await_device_configured": False,
        "is_mdm_removable": False,
        "auto_advance_setup": False,
        "support_phone_number": "+1 555 0100",
        "support_email_address": "it@school.example",
        "org_magic": "913FABBB-0032-4E13-9966-D6BBAC900331",
        "anchor_certs": ["MIIB"],
        "supervising_host_certs": [],
        "skip_setup_items": ["Location", "Siri"],
        "department": "IT",
        "language": "en",
        "region": "US",
        "configuration_web_url": "https://mdm.example/web",
    }
    defined = dep_profiles.define_profile(session, sid, body, NOW)
    stored = dep_profiles.get_profile(session, sid, defined["profile_uuid"])
    assert stored == body | {"profile_uuid": defined["profile_uuid"]}


@pytest.mark.parametrize(
    "extra",
    [
        {"payload": "x"},
        {"is_supervised": "yes"},
        {"skip_setup_items": "Location"},
        {"anchor_certs": [1]},
        {"language": 7},
        {"is_mandatory": None},
    ],
)
def test_other_keys_and_wrong_types_are_malformed(
    session: Session, vault: Vault, extra: dict[str, Any]
) -> None:
    sid = add_server(session, vault, "Mosyle", NOW)
    assert _refused(session, sid, BASE | extra) == (400, "MALFORMED_REQUEST_BODY")
    assert _count(session, sid) == 0


def test_a_profile_over_the_size_cap_is_refused(session: Session, vault: Vault) -> None:
    sid = add_server(session, vault, "Fleet", NOW)
    certs = ["A" * 4000] * (dep_profiles.MAX_PROFILE_BYTES // 4000 + 1)
    assert _refused(session, sid, BASE | {"anchor_certs": certs}) == (400, "MALFORMED_REQUEST_BODY")
    fits = ["A" * 4000] * (dep_profiles.MAX_PROFILE_BYTES // 4000 - 1)
    assert dep_profiles.define_profile(session, sid, BASE | {"anchor_certs": fits}, NOW)
    assert _count(session, sid) == 1


def test_at_the_cap_the_oldest_unused_profile_makes_room(
    session: Session, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dep_profiles, "MAX_PROFILES", 3)
    sid = add_server(session, vault, "Zentral", NOW)
    other = add_server(session, vault, "Other", NOW)
    d1, d2, d3 = serial(1), serial(2), serial(3)
    device_import.import_devices(session, OPERATOR, csv_of([d1, d2, d3]), NOW)
    devices.assign_devices(session, OPERATOR, "Zentral", [d1, d2, d3], NOW)
    p1 = dep_profiles.define_profile(session, sid, BASE | {"devices": [d1]}, NOW)["profile_uuid"]
    p2, p3 = (dep_profiles.define_profile(session, sid, BASE, NOW)["profile_uuid"] for _ in "23")
    dep_profiles.define_profile(session, other, BASE, NOW)
    p4 = dep_profiles.define_profile(session, sid, BASE, NOW)["profile_uuid"]
    assert _count(session, sid) == 3 and _count(session, other) == 1
    with pytest.raises(DepError):
        dep_profiles.get_profile(session, sid, p2)
    assert dep_profiles.get_profile(session, sid, p1), "a profile a device holds is kept"
    for uuid, device in ((p3, d2), (p4, d3)):
        dep_profiles.assign_profile(session, sid, {"profile_uuid": uuid, "devices": [device]}, NOW)
    assert _refused(session, sid, BASE) == (403, "ACCESS_DENIED")
    assert _count(session, sid) == 3
