"""Apple is the source of truth (DESIGN.md §1a): one sync reads Apple's MDM servers and devices
(all pages, before any write) and applies them in one transaction, so a failed or cut read
changes nothing here."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core import audit
from core.apple import status, usage
from core.apple.api import AppleApi, AppleDevice, AppleInventory, AppleMalformed, AppleServer
from core.devices.changelog import move
from core.devices.inventory import clean_serial
from core.errors import InvalidInput, InvalidName, MdmbotError
from core.models import Device, Server
from core.roles import Actor
from core.tokens.names import clean_name, normalize_name

APPLE = Actor("apple", operator=True)
# Apple's productFamily (ASM-API.md §3.1) → the OS mdmbot records for it.
_OS = {"iPad": "iPadOS", "iPhone": "iOS", "iPod": "iOS", "Mac": "OSX", "AppleTV": "tvOS",
       "Vision": "visionOS", "Watch": "watchOS"}  # fmt: skip


@dataclass(frozen=True)
class SyncResult:
    """Totals after a sync (live servers linked to Apple, devices not released) and changes."""

    servers: int
    devices: int
    changes: int


@dataclass(frozen=True)
class SyncOutcome:
    """A sync's result, or its error; `alert`: the first failure of its kind since the last
    success (post one alert); `recovered`: a success after alerted failures."""

    result: SyncResult | None
    error: MdmbotError | None = None
    alert: bool = False
    recovered: bool = False


UnitOfWork = Callable[[], AbstractContextManager[Session]]


def sync(api: Callable[[], AppleApi], unit_of_work: UnitOfWork, now: datetime) -> SyncResult:
    """Read Apple's inventory, then apply it in one unit of work (nothing is written before the
    whole read succeeded); errors are raised, the failure is not recorded."""
    client = api()
    return _apply(client.inventory(), unit_of_work, now, client.portal)[0]


def _apply(
    inventory: AppleInventory, unit_of_work: UnitOfWork, now: datetime, portal: str
) -> tuple[SyncResult, bool]:
    """Apply in one unit of work; (result, whether it ended an alerted failure)."""
    try:
        with unit_of_work() as session:
            result = apply_inventory(session, inventory, now)
            return result, status.record_success(session, now)
    except sa.exc.IntegrityError:
        raise AppleMalformed(
            "Apple lists two MDM servers whose names mdmbot counts as the same (case, spacing "
            "or width), or one with the name of a server Apple no longer links; rename one in "
            f"{portal}."
        ) from None


def run_sync(api: Callable[[], AppleApi], unit_of_work: UnitOfWork, now: datetime) -> SyncOutcome:
    """A sweep's sync: a failure is recorded (the Home shows it), never raised."""
    try:
        client = api()
        result, recovered = _apply(client.inventory(), unit_of_work, now, client.portal)
    except MdmbotError as exc:
        with unit_of_work() as session:
            first = status.record_failure(session, exc, now)
        return SyncOutcome(None, exc, alert=first)
    return SyncOutcome(result, recovered=recovered)


def apply_inventory(session: Session, inventory: AppleInventory, now: datetime) -> SyncResult:
    """Bring servers and devices in line with Apple's inventory."""
    status.lock(session)
    changes, local_ids = _apply_servers(session, inventory.servers, now)
    changes += _apply_devices(session, inventory.devices, local_ids, now)
    usage.note_apple_use(session, now)  # a connection Apple saw since a token was installed
    servers = session.exec(
        select(func.count()).select_from(Server)
        .where(col(Server.apple_id).is_not(None), col(Server.removed_at).is_(None))
    ).one()  # fmt: skip
    devices = session.exec(
        select(func.count()).select_from(Device).where(col(Device.released_at).is_(None))
    ).one()
    return SyncResult(int(servers), int(devices), changes)


def _display(name: str) -> tuple[str, str] | None:
    """(display name, normalised key) of an Apple server name mdmbot can hold."""
    try:
        display = clean_name(name)
        return display, normalize_name(display)
    except (InvalidName, InvalidInput):
        return None


def _apply_servers(
    session: Session, listed: list[AppleServer], now: datetime
) -> tuple[int, dict[str, int]]:
    """Create, link, rename, revive and remove servers; (changes, Apple id → local id)."""
    linked = {s.apple_id: s for s in session.exec(select(Server)).all() if s.apple_id}
    wanted = {a.id: names for a in listed if (names := _display(a.name)) is not None}
    changes = 0
    # Names first freed by every server that leaves or changes its name, so two servers can
    # swap names in one sync.
    for apple_id, old in linked.items():
        names = wanted.get(apple_id)
        if old.removed_at is None and (names is None or names[1] != old.normalized_name):
            old.normalized_name = None
            session.add(old)
            if names is None:
                old.removed_at = now
                audit.record(session, APPLE, "server.remove", old.name, now, apple_id=apple_id)
                changes += 1
    session.flush()
    unlinked: dict[str | None, Server] = {
        s.normalized_name: s
        for s in session.exec(
            select(Server).where(col(Server.apple_id).is_(None), col(Server.removed_at).is_(None))
        ).all()
    }
    local_ids: dict[str, int] = {}
    for apple in listed:
        names = wanted.get(apple.id)
        if names is None:
            continue
        server: Server | None = linked.get(apple.id) or unlinked.pop(names[1], None)
        changes += _apply_server(session, server, apple, names, now)
        session.flush()
        found = server or session.exec(select(Server).where(Server.apple_id == apple.id)).one()
        assert found.id is not None
        local_ids[apple.id] = found.id
    return changes, local_ids


def _apply_server(
    session: Session,
    server: Server | None,
    apple: AppleServer,
    names: tuple[str, str],
    now: datetime,
) -> int:
    display, key = names
    if server is None:
        session.add(Server(
            name=display, normalized_name=key, created_by=APPLE.label, created_at=now,
            release_devices=apple.release_devices is not False, apple_id=apple.id,
            apple_last_connected_at=apple.last_connected_at,
        ))  # fmt: skip
        audit.record(session, APPLE, "server.add", display, now, apple_id=apple.id)
        return 1
    changes = 0
    if server.apple_id is None:
        server.apple_id = apple.id
        audit.record(session, APPLE, "server.link", display, now, apple_id=apple.id)
        changes += 1
    if server.removed_at is not None:
        server.removed_at = None
        changes += 1
    if server.name != display or server.normalized_name != key:
        if server.name != display:
            audit.record(session, APPLE, "server.edit", display, now, name=[server.name, display])
            changes += 1
        server.name, server.normalized_name = display, key
    if apple.release_devices is not None and server.release_devices != apple.release_devices:
        server.release_devices = apple.release_devices
        changes += 1
    if server.apple_last_connected_at != apple.last_connected_at and apple.last_connected_at:
        server.apple_last_connected_at = apple.last_connected_at
        changes += 1
    session.add(server)
    return changes


def _apply_devices(
    session: Session, listed: list[AppleDevice], local_ids: dict[str, int], now: datetime
) -> int:
    """Upsert Apple's devices with their servers; a device Apple no longer lists was released."""
    local = {d.serial_number: d for d in session.exec(select(Device)).all()}
    changes = 0
    seen: set[str] = set()
    for apple in listed:
        try:
            serial = clean_serial(apple.serial)
        except InvalidInput:  # not a serial mdmbot can hold: left out, the rest goes on
            continue
        seen.add(serial)
        device = local.get(serial)
        changed = False
        if device is None:
            device = Device(
                serial_number=serial, model=apple.model, color=apple.color,
                device_family=apple.family[:16], os=_OS.get(apple.family, "iOS"),
                order_number=apple.order_number, imported_at=now,
            )  # fmt: skip
            session.add(device)
            session.flush()
            changed = True
        elif device.released_at is not None:
            device.released_at = device.released_by = None
            changed = True
        if apple.model and device.model != apple.model:
            device.model, changed = apple.model, True
        target = local_ids.get(apple.server_id) if apple.server_id else None
        changed = move(session, device, target, APPLE.label, now) or changed
        session.add(device)
        changes += changed
    for serial, device in local.items():
        if serial not in seen and device.released_at is None:
            move(session, device, None, APPLE.label, now)
            device.released_at, device.released_by = now, APPLE.label
            session.add(device)
            changes += 1
    return changes
