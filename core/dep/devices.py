"""The device endpoints of the device assignment service (DEP-API.md): fetch, sync, details,
disown. Each takes the session's server id and the request's JSON, and returns the answer's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit
from core.dep import cursors
from core.dep.errors import refused
from core.devices.changelog import DELETED, last_change_id, lock_devices
from core.devices.inventory import release
from core.models import Device, DeviceChange, Server, Token
from core.roles import Actor

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_DEVICES = 1000
CURSOR_KEY = "dep-cursor"


def server_of_token(session: Session, token_id: int) -> int:
    """The live server a session's token belongs to (a removed server's sessions are over)."""
    server = session.exec(
        select(Server)
        .join(Token, col(Token.server_id) == col(Server.id))
        .where(Token.id == token_id)
    ).first()
    if server is None or server.id is None or server.removed_at is not None:
        raise refused("UNAUTHORIZED", 401)
    return server.id


def rfc3339(moment: datetime) -> str:
    """A timestamp as Apple writes them: UTC, whole seconds, `Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# (attribute of Device, name in Apple's Device object); the first seven carry no profile state.
_FIELDS = (
    ("serial_number", "serial_number"),
    ("model", "model"),
    ("description", "description"),
    ("color", "color"),
    ("asset_tag", "asset_tag"),
    ("os", "os"),
    ("device_family", "device_family"),
    ("profile_status", "profile_status"),
    ("profile_uuid", "profile_uuid"),
    ("profile_assign_time", "profile_assign_time"),
    ("profile_push_time", "profile_push_time"),
    ("assigned_at", "device_assigned_date"),
    ("assigned_by", "device_assigned_by"),
)
BASIC = 7
_COLUMNS = tuple(getattr(Device, attribute) for attribute, _ in _FIELDS)


def _json(values: Sequence[Any], profile: bool, times: dict[datetime, str]) -> dict[str, Any]:
    """Apple's Device object from column values; absent values are left out, never `""`."""
    data: dict[str, Any] = {}
    for (_, name), value in zip(_FIELDS if profile else _FIELDS[:BASIC], values, strict=False):
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            value = times.get(value) or times.setdefault(value, rfc3339(value))
        data[name] = value
    return data


def device_json(device: Device, *, profile: bool = True) -> dict[str, Any]:
    """A device as the DEP API shows it."""
    return _json([getattr(device, attribute) for attribute, _ in _FIELDS], profile, {})


def request_object(body: object) -> dict[str, Any]:
    """The request body as a JSON object."""
    if not isinstance(body, dict):
        raise refused("MALFORMED_REQUEST_BODY")
    return body


def parse_limit(body: dict[str, Any]) -> int:
    """`limit`: default 100, at most 1,000 (larger asks get 1,000)."""
    value = body.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int):
        raise refused("MALFORMED_REQUEST_BODY")
    return max(1, min(value, MAX_LIMIT))


def serial_list(body: object) -> list[str]:
    """The `devices` list of serial numbers (at least one)."""
    devices = request_object(body).get("devices")
    if devices is None or devices == []:
        raise refused("DEVICE_ID_REQUIRED")
    if not isinstance(devices, list) or not all(isinstance(s, str) for s in devices):
        raise refused("MALFORMED_REQUEST_BODY")
    if len(devices) > MAX_DEVICES:
        raise refused("MALFORMED_REQUEST_BODY")
    return list(dict.fromkeys(devices))


def own_devices(
    session: Session, server_id: int, serials: list[str], *, lock: bool = True
) -> dict[str, Device]:
    """The server's devices among `serials` (as sent), row-locked; others are left out."""
    found = lock_devices(session, [s.strip().upper() for s in serials], lock=lock)
    return {
        s: found[s.strip().upper()]
        for s in serials
        if s.strip().upper() in found and found[s.strip().upper()].server_id == server_id
    }


def _page(cursor: str, devices: list[dict[str, Any]], more: bool, now: datetime) -> dict[str, Any]:
    return {
        "cursor": cursor,
        "devices": devices,
        "fetched_until": rfc3339(now),
        "more_to_follow": more,
    }


def fetch_devices(
    session: Session, key: bytes, server_id: int, body: object, now: datetime
) -> dict[str, Any]:
    """`POST /server/devices`: the server's devices by serial, one keyset page per call."""
    request = request_object(body)
    limit = parse_limit(request)
    text = request.get("cursor")
    if text:
        start = cursors.decode(key, text, server_id, now)
        if start.done:
            raise refused("EXHAUSTED_CURSOR")
    else:
        start = cursors.Cursor(server_id, last_change_id(session, server_id), 0)
    query = sa.select(*_COLUMNS).where(col(Device.server_id) == server_id)
    if start.after:
        query = query.where(col(Device.serial_number) > start.after)
    query = query.order_by(col(Device.serial_number)).limit(limit + 1)
    session.flush()
    rows = session.connection().execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    after = rows[-1][0] if more else None
    issued = int(now.timestamp())
    next_cursor = cursors.Cursor(server_id, start.change_id, issued, after, done=not more)
    times: dict[datetime, str] = {}
    return _page(cursors.encode(key, next_cursor), [_json(r, True, times) for r in rows], more, now)


def sync_devices(
    session: Session, key: bytes, server_id: int, body: object, now: datetime
) -> dict[str, Any]:
    """`POST /devices/sync`: the server's changes after the cursor, oldest first.

    A change shows the device's live row; once the device has left this server its profile and
    assignment are another server's, so only its inventory fields are shown.
    """
    request = request_object(body)
    limit = parse_limit(request)
    if not request.get("cursor"):
        raise refused("CURSOR_REQUIRED")
    start = cursors.decode(key, request["cursor"], server_id, now)
    query = (
        sa.select(col(DeviceChange.id), col(DeviceChange.op_type), col(DeviceChange.op_date))
        .add_columns(col(Device.server_id), *_COLUMNS)
        .join(Device, col(Device.id) == col(DeviceChange.device_id))
        .where(col(DeviceChange.server_id) == server_id, col(DeviceChange.id) > start.change_id)
        .order_by(col(DeviceChange.id))
        .limit(limit + 1)
    )
    session.flush()
    rows = session.connection().execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    position = int(rows[-1][0]) if rows else start.change_id
    times: dict[datetime, str] = {}
    devices = [
        _json(row[4:], row[1] != DELETED and row[3] == server_id, times)
        | {"op_type": row[1], "op_date": times.get(row[2]) or rfc3339(row[2])}
        for row in rows
    ]
    next_cursor = cursors.Cursor(server_id, position, int(now.timestamp()), done=True)
    return _page(cursors.encode(key, next_cursor), devices, more, now)


def device_details(session: Session, server_id: int, body: object) -> dict[str, Any]:
    """`POST /devices`: details of the server's own devices; others are `NOT_ACCESSIBLE`."""
    serials = serial_list(body)
    mine = own_devices(session, server_id, serials, lock=False)
    return {
        "devices": {
            s: device_json(mine[s]) | {"response_status": "SUCCESS"}
            if s in mine
            else {"response_status": "NOT_ACCESSIBLE"}
            for s in serials
        }
    }


def disown_devices(session: Session, server_id: int, body: object, now: datetime) -> dict[str, Any]:
    """`POST /devices/disown`: release the server's devices, if its release switch is on."""
    server = session.get(Server, server_id)
    if server is None or server.removed_at is not None or not server.release_devices:
        raise refused("ACCESS_DENIED", 403)
    serials = serial_list(body)
    mine = own_devices(session, server_id, serials)
    by = f"mdm:{server.name}"
    release(session, list(mine.values()), by, now)
    if mine:
        released = sorted(d.serial_number for d in mine.values())
        audit.record(session, Actor(by), "devices.release", server.name, now, serials=released)
    return {"devices": {s: "SUCCESS" if s in mine else "NOT_ACCESSIBLE" for s in serials}}
