"""Use cases over devices for the IT team: assign, unassign, release, defaults, list, show."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core import audit
from core.devices.changelog import chunks, defaults, lock_devices, lock_servers, move
from core.errors import InvalidInput, NotFound
from core.models import DefaultAssignment, Device, Server
from core.people.persons import authorize
from core.progress import Progress, Tally
from core.roles import Actor, Permission
from core.tokens.servers import find_server

FAMILIES = ("iPad", "iPhone", "iPod", "Mac", "AppleTV", "Vision")
OSES = ("iOS", "iPadOS", "OSX", "tvOS", "visionOS")
_SERIAL = re.compile(r"[A-Z0-9]{8,20}")
_FAMILY = {f.lower(): f for f in FAMILIES} | {"apple tv": "AppleTV", "apple vision": "Vision"}
_OS = {o.lower(): o for o in OSES} | {"macos": "OSX"}
MAX_SERIALS = 100_000


def clean_serial(text: str) -> str:
    """A serial number trimmed and upper-cased; 8 to 20 letters and digits."""
    serial = text.strip().upper()
    if not _SERIAL.fullmatch(serial):
        shown = text.strip()[:40] or "(empty)"
        raise InvalidInput(f"“{shown}” is not a serial number (8–20 letters and digits).")
    return serial


def parse_family(text: str) -> str:
    """Apple's device family named by `text` (case ignored)."""
    family = _FAMILY.get(" ".join(text.strip().lower().split()))
    if family is None:
        raise InvalidInput(f"“{text.strip()}” is not a device family: {', '.join(FAMILIES)}.")
    return family


def parse_os(text: str) -> str:
    """Apple's OS name named by `text` (case ignored; macOS is `OSX`)."""
    name = _OS.get(text.strip().lower())
    if name is None:
        raise InvalidInput(f"“{text.strip()}” is not an OS: {', '.join(OSES)}.")
    return name


def split_serials(text: str) -> list[str]:
    """Serials pasted from a spreadsheet: split on commas, tabs, spaces and new lines."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


@dataclass(frozen=True)
class DeviceView:
    """What a person sees of one device."""

    serial_number: str
    model: str
    description: str
    color: str
    asset_tag: str | None
    device_family: str
    os: str
    order_number: str | None
    server: str | None
    assigned_at: datetime | None
    assigned_by: str | None
    profile_status: str
    profile_uuid: str | None
    released_at: datetime | None
    imported_at: datetime | None = None


def _view(device: Device, server: str | None) -> DeviceView:
    return DeviceView(
        device.serial_number,
        device.model,
        device.description,
        device.color,
        device.asset_tag,
        device.device_family,
        device.os,
        device.order_number,
        server,
        device.assigned_at,
        device.assigned_by,
        device.profile_status,
        device.profile_uuid,
        device.released_at,
        device.imported_at,
    )


@dataclass
class Assignment:
    """The outcome of assigning serials: what moved, what stayed, what could not."""

    server: str
    assigned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[str]:
        """Serials that were not assigned, invalid first."""
        return self.invalid + self.unknown + self.released


def _clean_all(serials: Sequence[str]) -> tuple[list[str], list[str]]:
    good, bad = [], []
    for text in serials:
        try:
            good.append(clean_serial(text))
        except InvalidInput:
            bad.append(text.strip())
    if len(good) > MAX_SERIALS:
        raise InvalidInput(f"At most {MAX_SERIALS:,} serial numbers at a time.")
    return list(dict.fromkeys(good)), bad


def _refusal(result: Assignment) -> str:
    parts = []
    if result.invalid:
        parts.append("not serial numbers: " + ", ".join(result.invalid[:20]))
    if result.unknown:
        parts.append("unknown: " + ", ".join(result.unknown[:20]))
    if result.released:
        parts.append("released: " + ", ".join(result.released[:20]))
    more = len(result.refused) - sum(min(len(x), 20) for x in (result.invalid, result.unknown))
    more -= min(len(result.released), 20)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def assign_devices(
    session: Session,
    actor: Actor,
    server_name: str,
    serials: Sequence[str],
    now: datetime,
    *,
    partial: bool = False,
    progress: Progress | None = None,
) -> Assignment:
    """Assign devices to a server; with `partial` the good serials go even if some are refused."""
    authorize(session, actor, Permission.MANAGE_DEVICES)
    server = find_server(session, server_name)
    return _assign(session, actor, server, serials, now, partial=partial, progress=progress)


def _assign(
    session: Session,
    actor: Actor,
    server: Server | None,
    serials: Sequence[str],
    now: datetime,
    *,
    partial: bool,
    progress: Progress | None = None,
) -> Assignment:
    wanted, invalid = _clean_all(serials)
    if not wanted and not invalid:
        raise InvalidInput("Give at least one serial number.")
    result = Assignment(server.name if server else "Unassigned", invalid=invalid)
    looked_up = Tally(progress, "Looking up devices", len(wanted), "devices")
    devices = lock_devices(session, wanted, tally=looked_up)
    result.unknown = [s for s in wanted if s not in devices]
    result.released = [s for s in wanted if s in devices and devices[s].released_at]
    if result.refused and not partial:
        raise InvalidInput("Nothing was changed. Not assignable — " + _refusal(result) + ".")
    target = server.id if server else None
    movable = [d for d in devices.values() if d.released_at is None]
    lock_servers(session, [target, *(d.server_id for d in movable)])
    what = "Assigning devices" if server else "Unassigning devices"
    moving = Tally(progress, what, len(movable), "devices")
    for part in chunks(sorted(movable, key=lambda d: d.serial_number)):
        for device in part:
            moved = move(session, device, target, actor.label, now)
            (result.assigned if moved else result.unchanged).append(device.serial_number)
        session.flush()
        moving.add(len(part))
    if result.assigned:
        action = "devices.assign" if server else "devices.unassign"
        audit.record(
            session,
            actor,
            action,
            result.server,
            now,
            count=len(result.assigned),
            serials=result.assigned[:50],
        )
    return result


def unassign_devices(
    session: Session,
    actor: Actor,
    serials: Sequence[str],
    now: datetime,
    *,
    progress: Progress | None = None,
) -> Assignment:
    """Take devices off whatever server they are assigned to (all or nothing)."""
    authorize(session, actor, Permission.MANAGE_DEVICES)
    return _assign(session, actor, None, serials, now, partial=False, progress=progress)


def _releasable(session: Session, serials: Sequence[str]) -> dict[str, Device]:
    wanted, invalid = _clean_all(serials)
    if not wanted and not invalid:
        raise InvalidInput("Give at least one serial number.")
    devices = lock_devices(session, wanted)
    problem = Assignment("", invalid=invalid)
    problem.unknown = [s for s in wanted if s not in devices]
    problem.released = [s for s in wanted if s in devices and devices[s].released_at]
    if problem.refused:
        raise InvalidInput("Nothing was released. Not releasable — " + _refusal(problem) + ".")
    return {s: devices[s] for s in wanted}


def releasable(session: Session, actor: Actor, serials: Sequence[str]) -> list[str]:
    """The cleaned serials if the actor may release them all (to confirm before releasing)."""
    authorize(session, actor, Permission.RELEASE_DEVICES)
    return list(_releasable(session, serials))


def release_devices(
    session: Session, actor: Actor, serials: Sequence[str], now: datetime
) -> list[str]:
    """Release devices from the organisation (Administrator only; all or nothing)."""
    authorize(session, actor, Permission.RELEASE_DEVICES)
    devices = _releasable(session, serials)
    release(session, list(devices.values()), actor.label, now)
    wanted = list(devices)
    audit.record(session, actor, "devices.release", f"{len(wanted)} devices", now, serials=wanted)
    return wanted


def release(session: Session, devices: Sequence[Device], by: str, now: datetime) -> None:
    """Mark devices released: they leave their server (`deleted`) and every listing."""
    lock_servers(session, [d.server_id for d in devices])
    for device in devices:
        move(session, device, None, by, now)
        device.released_at, device.released_by = now, by
        session.add(device)


def set_default(
    session: Session, actor: Actor, family: str, server_name: str | None, now: datetime
) -> tuple[str, str | None]:
    """Make a server the default for a device family (None: no default); returns both names."""
    authorize(session, actor, Permission.MANAGE_DEVICES)
    name = parse_family(family)
    server = find_server(session, server_name) if server_name is not None else None
    row = session.get(DefaultAssignment, name)
    previous = row.server_id if row else None
    if server is None or server.id is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(
            DefaultAssignment(
                device_family=name, server_id=server.id, set_by=actor.label, set_at=now
            )
        )
    else:
        row.server_id, row.set_by, row.set_at = server.id, actor.label, now
        session.add(row)
    shown = server.name if server else None
    audit.record(
        session, actor, "devices.default", name, now, server=shown, previous_server_id=previous
    )
    return name, shown


def list_defaults(session: Session) -> list[tuple[str, str | None]]:
    """Each device family with its default server's name (None: no default)."""
    ids = defaults(session)
    names = dict(session.exec(select(Server.id, Server.name)).all())
    return [(f, names.get(ids[f]) if f in ids else None) for f in FAMILIES]


def list_devices(
    session: Session,
    *,
    server_name: str | None = None,
    unassigned: bool = False,
    limit: int | None = None,
    after: str | None = None,
) -> list[DeviceView]:
    """Devices not released, by serial: all, one server's or the unassigned; after `after`."""
    return list(iter_devices(session, server_name=server_name, unassigned=unassigned,
                             limit=limit, after=after))  # fmt: skip


def iter_devices(
    session: Session,
    *,
    server_name: str | None = None,
    unassigned: bool = False,
    limit: int | None = None,
    after: str | None = None,
) -> Iterator[DeviceView]:
    """`list_devices` as a stream read 100 rows at a time, for callers that render as they go."""
    query = (
        sa.select(*_VIEW_COLUMNS)
        .outerjoin(Server, col(Server.id) == col(Device.server_id))
        .where(col(Device.released_at).is_(None))
        .order_by(col(Device.serial_number))
    )
    if server_name is not None:
        query = query.where(col(Device.server_id) == find_server(session, server_name).id)
    elif unassigned:
        query = query.where(col(Device.server_id).is_(None))
    if after is not None:
        query = query.where(col(Device.serial_number) > after)
    if limit is not None:
        query = query.limit(limit)
    # Plain columns, not ORM objects: a page of 1,000 devices is read in a third of the time.
    for row in session.connection().execute(query).yield_per(100):
        yield DeviceView(*row)


_VIEW_COLUMNS: tuple[Any, ...] = (
    Device.serial_number, Device.model, Device.description, Device.color, Device.asset_tag,
    Device.device_family, Device.os, Device.order_number, Server.name, Device.assigned_at,
    Device.assigned_by, Device.profile_status, Device.profile_uuid, Device.released_at,
    Device.imported_at,
)  # fmt: skip  (DeviceView's fields, in order)


def show_device(session: Session, serial: str) -> DeviceView:
    """One device (released ones too: they stay in the history)."""
    key = clean_serial(serial)
    row = session.exec(
        select(Device, Server.name)
        .outerjoin(Server, col(Server.id) == col(Device.server_id))
        .where(Device.serial_number == key)
    ).first()
    if row is None:
        raise NotFound(f"There is no device with serial number {key}.")
    return _view(*row)


def server_devices(
    session: Session, server_name: str, limit: int
) -> tuple[str, Counter[str], list[DeviceView]]:
    """A server's name, its devices by family, and its first `limit` devices by serial."""
    server = find_server(session, server_name)
    families = family_counts(session, server.id)
    return server.name, families, list_devices(session, server_name=server_name, limit=limit)


def device_counts(session: Session) -> dict[int, int]:
    """How many devices each server has."""
    rows = session.exec(
        select(Device.server_id, func.count())
        .where(col(Device.server_id).is_not(None))
        .group_by(col(Device.server_id))
    ).all()
    return {int(server_id): int(n) for server_id, n in rows if server_id is not None}


def family_counts(session: Session, server_id: int | None) -> Counter[str]:
    """Devices per family on one server (None: the unassigned ones, released excluded)."""
    query = sa.select(col(Device.device_family), func.count()).group_by(col(Device.device_family))
    if server_id is None:
        query = query.where(col(Device.server_id).is_(None), col(Device.released_at).is_(None))
    else:
        query = query.where(col(Device.server_id) == server_id)
    return Counter({family: int(n) for family, n in session.execute(query).all()})


def overview(session: Session) -> tuple[list[tuple[str, Counter[str]]], Counter[str]]:
    """Each live server's devices by family (by name), and the unassigned ones by family."""
    rows = session.execute(
        sa.select(col(Device.server_id), col(Device.device_family), func.count())
        .where(col(Device.released_at).is_(None))
        .group_by(col(Device.server_id), col(Device.device_family))
    ).all()
    counts: dict[int | None, Counter[str]] = {}
    for server_id, family, n in rows:
        counts.setdefault(server_id, Counter())[family] = int(n)
    live = session.exec(
        select(Server.id, Server.name)
        .where(col(Server.removed_at).is_(None))
        .order_by(col(Server.normalized_name))
    ).all()
    return [(name, counts.get(sid, Counter())) for sid, name in live], counts.get(None, Counter())
