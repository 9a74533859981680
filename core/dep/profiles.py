"""Enrollment profiles of the device assignment service: define, get, assign, clear."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from core.dep.devices import own_devices, request_object, serial_list
from core.dep.errors import refused
from core.devices.changelog import MODIFIED, clear_profile, lock_servers, log
from core.models import Profile

# Apple's "Define Profile" field limits and the error code each one answers with.
_LIMITS = (
    ("profile_name", 125, "CONFIG_NAME_INVALID", True),
    ("url", 2000, "CONFIG_URL_INVALID", True),
    ("department", 125, "DEPARTMENT_INVALID", False),
    ("org_magic", 256, "MAGIC_INVALID", False),
    ("support_email_address", 250, "SUPPORT_EMAIL_INVALID", False),
    ("support_phone_number", 50, "SUPPORT_PHONE_INVALID", False),
)


def _validate(profile: dict[str, Any]) -> None:
    for name, limit, code, required in _LIMITS:
        value = profile.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
            raise refused(code)
    # Apple: FLAGS_INVALID when is_mdm_removable is false on a profile that does not supervise.
    if profile.get("is_mdm_removable") is False and profile.get("is_supervised") is not True:
        raise refused("FLAGS_INVALID")


def _assign(
    session: Session, server_id: int, profile_uuid: str, serials: list[str], now: datetime
) -> dict[str, str]:
    mine = own_devices(session, server_id, serials)
    lock_servers(session, [server_id])
    for device in mine.values():
        device.profile_uuid, device.profile_status = profile_uuid, "assigned"
        device.profile_assign_time, device.profile_push_time = now, None
        session.add(device)
        log(session, server_id, device, MODIFIED, now)
    return {s: "SUCCESS" if s in mine else "NOT_ACCESSIBLE" for s in serials}


def define_profile(session: Session, server_id: int, body: object, now: datetime) -> dict[str, Any]:
    """`POST /profile`: store a profile (and assign it to `devices` if given)."""
    request = request_object(body)
    _validate(request)
    profile = {k: v for k, v in request.items() if k != "devices"}
    profile_uuid = uuid.uuid4().hex.upper()
    session.add(
        Profile(
            profile_uuid=profile_uuid,
            server_id=server_id,
            body=json.dumps(profile, sort_keys=True),
            created_at=now,
        )
    )
    session.flush()
    devices: dict[str, str] = {}
    if request.get("devices"):
        devices = _assign(session, server_id, profile_uuid, serial_list(request), now)
    return {"profile_uuid": profile_uuid, "devices": devices}


def _find(session: Session, server_id: int, profile_uuid: object) -> Profile | None:
    if not isinstance(profile_uuid, str):
        return None
    profile = session.exec(select(Profile).where(Profile.profile_uuid == profile_uuid)).first()
    return profile if profile is not None and profile.server_id == server_id else None


def get_profile(session: Session, server_id: int, profile_uuid: str | None) -> dict[str, Any]:
    """`GET /profile?profile_uuid=`: a profile this server defined."""
    if not profile_uuid:
        raise refused("PROFILE_UUID_REQUIRED")
    profile = _find(session, server_id, profile_uuid)
    if profile is None:
        raise refused("NOT_FOUND")
    stored: dict[str, Any] = json.loads(profile.body)
    return stored | {"profile_uuid": profile.profile_uuid}


def assign_profile(session: Session, server_id: int, body: object, now: datetime) -> dict[str, Any]:
    """`PUT`/`POST /profile/devices`: assign a profile to some of the server's devices."""
    request = request_object(body)
    profile_uuid = request.get("profile_uuid")
    if not profile_uuid:
        raise refused("PROFILE_UUID_REQUIRED")
    serials = serial_list(request)
    if _find(session, server_id, profile_uuid) is None:
        raise refused("NOT_FOUND", 404)
    assert isinstance(profile_uuid, str)
    return {
        "profile_uuid": profile_uuid,
        "devices": _assign(session, server_id, profile_uuid, serials, now),
    }


def clear_profiles(session: Session, server_id: int, body: object, now: datetime) -> dict[str, Any]:
    """`DELETE /profile/devices`: remove the profile from some of the server's devices."""
    serials = serial_list(body)
    mine = own_devices(session, server_id, serials)
    lock_servers(session, [server_id])
    for device in mine.values():
        clear_profile(device)
        device.profile_status = "removed"
        session.add(device)
        log(session, server_id, device, MODIFIED, now)
    return {"devices": {s: "SUCCESS" if s in mine else "NOT_ACCESSIBLE" for s in serials}}
