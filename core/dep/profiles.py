"""Enrollment profiles of the device assignment service: define, get, assign, clear."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from core.dep.devices import own_devices, request_object, serial_list
from core.dep.errors import refused
from core.devices.changelog import MODIFIED, clear_profile, lock_servers, log
from core.models import Device, Profile

# Apple's "Define Profile" field limits and the error code each one answers with.
_LIMITS = (
    ("profile_name", 125, "CONFIG_NAME_INVALID", True),
    ("url", 2000, "CONFIG_URL_INVALID", True),
    ("department", 125, "DEPARTMENT_INVALID", False),
    ("org_magic", 256, "MAGIC_INVALID", False),
    ("support_email_address", 250, "SUPPORT_EMAIL_INVALID", False),
    ("support_phone_number", 50, "SUPPORT_PHONE_INVALID", False),
)
# The other keys of Apple's Profile object ("Define Profile"), by the JSON type each one takes.
_TYPES: dict[str, type] = {
    "allow_pairing": bool,
    "is_supervised": bool,
    "is_multi_user": bool,
    "is_mandatory": bool,
    "await_device_configured": bool,
    "is_mdm_removable": bool,
    "auto_advance_setup": bool,
    "language": str,
    "region": str,
    "configuration_web_url": str,
    "anchor_certs": list,
    "supervising_host_certs": list,
    "skip_setup_items": list,
    "devices": list,
}
KEYS = frozenset(_TYPES) | {name for name, *_ in _LIMITS}
MAX_PROFILE_BYTES = 64 * 1024  # ours: a profile as stored (Apple's certificates are ~2 KB each)
MAX_PROFILES = 1000  # ours: profiles kept per server; the oldest unused one makes room


def _validate(profile: dict[str, Any]) -> None:
    if not KEYS.issuperset(profile):
        raise refused("MALFORMED_REQUEST_BODY")
    for name, kind in _TYPES.items():
        value = profile.get(name, kind())
        wrong = not isinstance(value, kind)
        if wrong or (kind is list and not all(isinstance(item, str) for item in value)):
            raise refused("MALFORMED_REQUEST_BODY")
    for name, limit, code, required in _LIMITS:
        value = profile.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
            raise refused(code)
    # Apple: FLAGS_INVALID when is_mdm_removable is false on a profile that does not supervise.
    if profile.get("is_mdm_removable") is False and profile.get("is_supervised") is not True:
        raise refused("FLAGS_INVALID")


def _make_room(session: Session, server_id: int) -> None:
    """Keep at most MAX_PROFILES per server: delete the oldest that no device of the server
    holds; when every one is held, refuse (Apple: ACCESS_DENIED, no access to the request)."""
    count = session.exec(select(func.count()).where(col(Profile.server_id) == server_id)).one()
    if count < MAX_PROFILES:
        return
    held = select(Device.profile_uuid).where(
        col(Device.server_id) == server_id, col(Device.profile_uuid).is_not(None)
    )
    spare = session.exec(
        select(Profile)
        .where(col(Profile.server_id) == server_id, col(Profile.profile_uuid).not_in(held))
        .order_by(col(Profile.id))
        .limit(count - MAX_PROFILES + 1)
    ).all()
    if len(spare) < count - MAX_PROFILES + 1:
        raise refused("ACCESS_DENIED", 403)
    for profile in spare:
        session.delete(profile)
    session.flush()


def _assign(
    session: Session, server_id: int, profile_uuid: str, serials: list[str], now: datetime
) -> dict[str, str]:
    mine = own_devices(session, server_id, serials)
    lock_servers(session, [server_id])
    return _apply(session, server_id, profile_uuid, serials, mine, now)


def _apply(
    session: Session,
    server_id: int,
    profile_uuid: str,
    serials: list[str],
    mine: dict[str, Device],
    now: datetime,
) -> dict[str, str]:
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
    stored = json.dumps(profile, sort_keys=True)
    if len(stored.encode()) > MAX_PROFILE_BYTES:
        raise refused("MALFORMED_REQUEST_BODY")
    serials = serial_list(request) if request.get("devices") else []
    mine = own_devices(session, server_id, serials) if serials else {}
    lock_servers(session, [server_id])
    _make_room(session, server_id)
    profile_uuid = uuid.uuid4().hex.upper()
    session.add(
        Profile(profile_uuid=profile_uuid, server_id=server_id, body=stored, created_at=now)
    )
    session.flush()
    devices = _apply(session, server_id, profile_uuid, serials, mine, now)
    return {"profile_uuid": profile_uuid, "devices": devices}


def _find(session: Session, server_id: int, profile_uuid: object) -> Profile | None:
    if not isinstance(profile_uuid, str) or len(profile_uuid) > 64 or "\x00" in profile_uuid:
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
