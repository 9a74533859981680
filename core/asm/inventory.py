"""What the served School Manager API reads: mdmbot's servers and devices in Apple's terms.

The rules (which servers are live, which devices are listed, their order) are those of
core.tokens.servers and core.devices.inventory; this module only renames and pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.devices import inventory
from core.devices.changelog import defaults
from core.devices.inventory import DeviceView
from core.errors import InvalidInput, NotFound
from core.models import Token
from core.tokens import servers
from core.tokens.servers import ServerView

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# mdmbot's device families as Apple's MdmServerProductFamily (ASM-API.md §4.1)
PRODUCT_FAMILIES = {
    "AppleTV": "APPLE_TV", "iPad": "IPAD", "iPhone": "IPHONE", "iPod": "IPOD", "Mac": "MAC",
    "Vision": "VISION",
}  # fmt: skip
CLASSIC = ("serverName", "serverType", "createdDateTime", "updatedDateTime")


def server_key(server_id: int) -> str:
    """A server's id as the API shows it: 32 upper-case hex digits, as Apple's are."""
    return f"{server_id:032X}"


def server_id_of(key: str) -> int:
    """The server id an API id names (NotFound when it names none)."""
    if len(key) != 32:
        raise NotFound(f"There is no resource of type 'mdmServers' with id '{key[:64]}'")
    try:
        return int(key, 16)
    except ValueError:
        raise NotFound(f"There is no resource of type 'mdmServers' with id '{key[:64]}'") from None


def encode_cursor(value: str) -> str:
    """An opaque cursor (base64url, as Apple's)."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The value behind a cursor this API gave out."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("The cursor is not one this API gave out.") from None


@dataclass(frozen=True)
class Page:
    """Resources of one page and the cursor of the next (None on the last page)."""

    items: list[Any]
    next_cursor: str | None


def _last_connected(session: Session) -> dict[int, str | None]:
    rows = session.exec(
        select(Token.server_id, Token.last_used_from).where(col(Token.status) == "active")
    )
    return dict(rows.all())


def server_attributes(session: Session, views: list[ServerView]) -> list[dict[str, Any]]:
    """Every attribute Apple defines for these servers (mdmServers), by server."""
    counts, families, ips = inventory.device_counts(session), defaults(session), {}
    if any(v.token_last_used_at for v in views):
        ips = _last_connected(session)
    found = []
    for view in views:
        updated = max(view.created_at, view.token_issued_at or view.created_at)
        found.append({
            "serverName": view.name,
            "serverType": "MDM",
            "createdDateTime": view.created_at,
            "updatedDateTime": updated,
            "enableMdmDisownFlag": view.release_devices,
            "defaultProductFamilies": sorted(
                PRODUCT_FAMILIES[f] for f, s in families.items() if s == view.id
            ),
            "status": "ACTIVE",
            "deviceCount": counts.get(view.id, 0),
            "lastConnectedDateTime": view.token_last_used_at,
            "lastConnectedIp": ips.get(view.id) if view.token_last_used_at else None,
        })  # fmt: skip
    return found


def list_servers(session: Session, limit: int, cursor: str | None) -> Page:
    """A page of live servers, by name: (id, attributes)."""
    start = _offset(cursor)
    views = servers.list_servers(session)
    chosen = views[start : start + limit]
    more = start + limit < len(views)
    items = list(zip((v.id for v in chosen), server_attributes(session, chosen), strict=True))
    return Page(items, encode_cursor(f"o:{start + limit}") if more else None)


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    value = decode_cursor(cursor)
    if not value.startswith("o:") or not value[2:].isdigit():
        raise InvalidInput("The cursor is not one this API gave out.")
    return int(value[2:])


def get_server(session: Session, key: str) -> tuple[int, dict[str, Any]]:
    """One live server by its API id: (id, attributes)."""
    try:
        view = servers.get_server_view_by_id(session, server_id_of(key))
    except NotFound:
        raise NotFound(f"There is no resource of type 'mdmServers' with id '{key[:64]}'") from None
    return view.id, server_attributes(session, [view])[0]


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    value = decode_cursor(cursor)
    if not value.startswith("s:"):
        raise InvalidInput("The cursor is not one this API gave out.")
    return value[2:]


def _page(views: Iterator[DeviceView], limit: int, render: Callable[[DeviceView], Any]) -> Page:
    items: list[Any] = []
    last, more = None, False
    for view in views:
        if len(items) == limit:
            more = True
        else:
            items.append(render(view))
            last = view.serial_number
    return Page(items, encode_cursor(f"s:{last}") if more else None)


def list_devices(
    session: Session, limit: int, cursor: str | None, render: Callable[[DeviceView], Any]
) -> Page:
    """A page of the organisation's devices (never released ones), by serial number, each
    rendered as it is read: 1,000 devices held at once as objects would be promoted by the
    garbage collector and make its full collections (40+ ms each) run every ~50 pages."""
    views = inventory.iter_devices(session, limit=limit + 1, after=_after(cursor))
    return _page(views, limit, render)


def server_devices(
    session: Session, key: str, limit: int, cursor: str | None, render: Callable[[DeviceView], Any]
) -> Page:
    """A page of the devices assigned to one live server, by serial number, each rendered as
    it is read."""
    server_id, _ = get_server(session, key)
    name = servers.find_server_by_id(session, server_id).name
    views = inventory.iter_devices(session, server_name=name, limit=limit + 1, after=_after(cursor))
    return _page(views, limit, render)


def get_device(session: Session, serial: str) -> DeviceView:
    """One device by serial number (released ones too: Apple shows their release date)."""
    try:
        return inventory.show_device(session, serial)
    except (NotFound, InvalidInput):
        raise NotFound(
            f"There is no resource of type 'orgDevices' with id '{serial[:64]}'"
        ) from None


def assigned_server(session: Session, serial: str) -> tuple[int, dict[str, Any]]:
    """The live server a device is assigned to: (id, attributes); NotFound when it has none."""
    device = get_device(session, serial)
    if device.server is None or device.released_at is not None:
        raise NotFound(f"The device '{device.serial_number}' is not assigned to an MDM server")
    server = servers.find_server(session, device.server)
    assert server.id is not None
    return get_server(session, server_key(server.id))


def device_updated(device: DeviceView) -> datetime | None:
    """When the device last changed in mdmbot (imported, assigned or released)."""
    moments = [m for m in (device.imported_at, device.assigned_at, device.released_at) if m]
    return max(moments) if moments else None
