"""The per-server device change log, and the moves and locks that write it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.models import DefaultAssignment, Device, DeviceChange, Server
from core.progress import SILENT, Tally

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"
CHUNK = 500
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    """`items` in slices of at most `size` (bounded IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def lock_devices(
    session: Session, serials: Sequence[str], *, lock: bool = True, tally: Tally = SILENT
) -> dict[str, Device]:
    """The devices with these serials, row-locked in id order (locks: devices, then servers)."""
    found: dict[str, Device] = {}
    for part in chunks(sorted(set(serials))):
        query = select(Device).where(col(Device.serial_number).in_(part)).order_by(col(Device.id))
        if lock:
            query = query.with_for_update()
        found.update((d.serial_number, d) for d in session.exec(query))
        tally.add(len(part))
    return found


def lock_servers(session: Session, server_ids: Iterable[int | None]) -> None:
    """Serialise change-log writers per server so that log ids follow commit order.

    A sync cursor is "every change after id N"; if a later id could commit before an earlier
    one, a client could step over the earlier. SQLite writers are already serial.
    """
    ids = sorted({i for i in server_ids if i is not None})
    if ids and session.get_bind().dialect.name == "postgresql":
        session.exec(
            select(Server.id)
            .where(col(Server.id).in_(ids))
            .order_by(col(Server.id))
            .with_for_update(key_share=True)
        ).all()


def last_change_id(session: Session, server_id: int) -> int:
    """The id of the server's latest change (0 when it has none)."""
    value = session.exec(
        select(sa.func.max(DeviceChange.id)).where(DeviceChange.server_id == server_id)
    ).one()
    return int(value or 0)


def log(session: Session, server_id: int, device: Device, op_type: str, now: datetime) -> None:
    """Append one change to the server's log."""
    assert device.id is not None
    session.add(
        DeviceChange(server_id=server_id, device_id=device.id, op_type=op_type, op_date=now)
    )


def clear_profile(device: Device) -> None:
    """Forget the device's enrollment profile (a new server starts from none)."""
    device.profile_status, device.profile_uuid = "empty", None
    device.profile_assign_time = device.profile_push_time = None


def move(session: Session, device: Device, server_id: int | None, by: str, now: datetime) -> bool:
    """Assign the device to `server_id` (None: unassign); the old server sees `deleted`."""
    if device.server_id == server_id:
        return False
    if device.server_id is not None:
        log(session, device.server_id, device, DELETED, now)
    device.server_id = server_id
    device.assigned_at = now if server_id is not None else None
    device.assigned_by = by if server_id is not None else None
    clear_profile(device)
    if server_id is not None:
        log(session, server_id, device, ADDED, now)
    session.add(device)
    return True


def defaults(session: Session) -> dict[str, int]:
    """The default server id of each device family that has one."""
    rows = session.exec(select(DefaultAssignment.device_family, DefaultAssignment.server_id))
    return dict(rows.all())


def evacuate_server(session: Session, server: Server, by: str, now: datetime) -> tuple[int, int]:
    """Devices of a removed server go to their family's default, or are unassigned.

    Returns (moved to a default, unassigned); defaults naming the server are dropped.
    """
    assert server.id is not None
    for row in session.exec(
        select(DefaultAssignment).where(DefaultAssignment.server_id == server.id)
    ):
        session.delete(row)
    session.flush()
    targets = defaults(session)
    serials = session.exec(select(Device.serial_number).where(Device.server_id == server.id)).all()
    devices = lock_devices(session, serials)
    lock_servers(session, [server.id, *targets.values()])
    moved = unassigned = 0
    for device in devices.values():
        if device.server_id != server.id:
            continue
        target = targets.get(device.device_family)
        move(session, device, target, by, now)
        moved, unassigned = (moved + 1, unassigned) if target else (moved, unassigned + 1)
    return moved, unassigned
