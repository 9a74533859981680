"""Apple's JSON documents (ASM-API.md §1.2 to 1.5): resources, absolute links, paging, fields."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any
from urllib.parse import urlencode

import falcon

from bot.asm.errors import JSON, ApiError
from core.asm.inventory import DEFAULT_LIMIT, MAX_LIMIT, Page, device_updated, server_key
from core.devices.inventory import DeviceView

_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
SERVER_FIELDS = frozenset({
    "serverName", "enableMdmDisownFlag", "defaultProductFamilies", "status", "serverType",
    "deviceCount", "lastConnectedDateTime", "lastConnectedIp", "createdDateTime",
    "updatedDateTime", "devices",
})  # fmt: skip
DEVICE_FIELDS = frozenset({
    "serialNumber", "addedToOrgDateTime", "releasedFromOrgDateTime", "updatedDateTime",
    "deviceModel", "productFamily", "productType", "deviceCapacity", "partNumber", "orderNumber",
    "color", "status", "orderDateTime", "imei", "meid", "eid", "wifiMacAddress",
    "bluetoothMacAddress", "ethernetMacAddress", "purchaseSourceId", "purchaseSourceType",
    "assignedServer", "appleCareCoverage",
})  # fmt: skip
ACTIVITY_FIELDS = frozenset(
    {"status", "subStatus", "createdDateTime", "completedDateTime", "downloadUrl"}
)


def base_url(req: falcon.Request, public_url: str | None) -> str:
    """Where links point: MDMBOT_DEP_PUBLIC_URL, else the request's own scheme and Host."""
    if public_url:
        return public_url
    host = req.get_header("Host") or ""
    if not _HOST.fullmatch(host):
        raise ApiError(400, "PARAMETER_ERROR.INVALID", "The Host header is malformed.")
    return f"{req.scheme}://{host}"


def when(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and `Z` (pyaxm wants timezone-aware times)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # without "+00:00"


def answer(resp: falcon.Response, document: dict[str, Any] | str, status: int = 200) -> None:
    """Send a JSON document (or its text, already encoded)."""
    resp.status = status
    resp.content_type = JSON
    resp.text = document if isinstance(document, str) else encode(document)


def encode(value: Any) -> str:
    """Compact JSON."""
    return json.dumps(value, separators=(",", ":"))


def encoded_listing(
    req: falcon.Request, base: str, resources: list[str], page: Page, limit: int
) -> str:
    """A list document whose resources are already encoded, one at a time as they were built:
    a page of 1,000 devices then never holds 10,000 dictionaries at once, which kept the
    garbage collector's full collections (up to 100 ms each) running every few pages."""
    rest = encode(listing(req, base, [], page, limit))
    assert rest.startswith('{"data":[]')
    return '{"data":[' + ",".join(resources) + "]" + rest[len('{"data":[]') :]


def fields(req: falcon.Request, kind: str, allowed: frozenset[str]) -> frozenset[str] | None:
    """The names asked for in `fields[kind]` (None: not given), refusing unknown ones."""
    text = req.get_param(f"fields[{kind}]")
    if text is None:
        return None
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - allowed)
    if unknown or not names:
        raise ApiError(
            400,
            "PARAMETER_ERROR.INVALID",
            f"'{','.join(unknown)[:100]}' is not a valid field name for {kind}",
            source={"parameter": f"fields[{kind}]"},
        )
    return names


def paging(req: falcon.Request) -> tuple[int, str | None]:
    """`limit` (1 to 1000, default 100) and `cursor`."""
    text = req.get_param("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise ApiError(
                400,
                "PARAMETER_ERROR.INVALID",
                f"limit must be a whole number from 1 to {MAX_LIMIT}",
                source={"parameter": "limit"},
            )
        limit = int(text)
    return limit, req.get_param("cursor")


def listing(
    req: falcon.Request, base: str, data: list[Any], page: Page, limit: int
) -> dict[str, Any]:
    """A list document: `links.next` carries every query parameter and the next cursor."""
    links = {"self": base + req.path}
    paging_info: dict[str, Any] = {"limit": limit}
    if page.next_cursor is not None:
        params = [(k, v) for k, v in _params(req) if k != "cursor"]
        params.append(("cursor", page.next_cursor))
        links["next"] = f"{base}{req.path}?{urlencode(params)}"
        paging_info["nextCursor"] = page.next_cursor
    return {"data": data, "links": links, "meta": {"paging": paging_info}}


def _params(req: falcon.Request) -> Iterable[tuple[str, str]]:
    for key, value in req.params.items():
        for one in value if isinstance(value, list) else [value]:
            yield key, one


def server_resource(
    base: str, server_id: int, attributes: dict[str, Any], names: frozenset[str] | None
) -> dict[str, Any]:
    """An mdmServers resource with the attributes named (all when `names` is None)."""
    key = server_key(server_id)
    shown = {k: when(v) if isinstance(v, datetime) else v for k, v in attributes.items()}
    chosen = names if names is not None else frozenset(shown)
    resource: dict[str, Any] = {
        "type": "mdmServers",
        "id": key,
        "attributes": {k: v for k, v in shown.items() if k in chosen},
    }
    if names is None or "devices" in names:
        devices = f"{base}/v1/mdmServers/{key}/relationships/devices"
        resource["relationships"] = {"devices": {"links": {"self": devices}}}
    resource["links"] = {"self": f"{base}/v1/mdmServers/{key}"}
    return resource


def device_json(
    base: str, device: DeviceView, names: frozenset[str] | None, *, single: bool = False
) -> str:
    """An orgDevices resource as JSON text, built without dictionaries: a page of 1,000 devices
    then leaves nothing for the garbage collector to trace (ASCII-escaped as `json.dumps`)."""
    serial, own = _quoted(device.serial_number), f"{base}/v1/orgDevices/{device.serial_number}"
    status = '"ASSIGNED"' if device.server and not device.released_at else '"UNASSIGNED"'
    attributes = [
        f'"serialNumber":{serial}',
        f'"addedToOrgDateTime":{_moment(device.imported_at)}',
        f'"releasedFromOrgDateTime":{_moment(device.released_at) if single else "null"}',
        f'"updatedDateTime":{_moment(device_updated(device))}',
        f'"deviceModel":{_quoted(device.model or device.description)}',
        f'"productFamily":{_quoted(device.device_family)}',
        f'"color":{_quoted(device.color)}',
        f'"status":{status}',
        '"purchaseSourceType":"MANUALLY_ADDED"',  # devices come to mdmbot by import
    ]
    if device.order_number:
        attributes.append(f'"orderNumber":{_quoted(device.order_number)}')
    if names is not None:
        attributes = [a for a in attributes if a[1 : a.index('"', 1)] in names]
    related = ""
    if names is None or "assignedServer" in names:
        related = (
            ',"relationships":{"assignedServer":{"links":{'
            f'"self":{_quoted(own + "/relationships/assignedServer")},'
            f'"related":{_quoted(own + "/assignedServer")}}}}}}}'
        )
    return (
        f'{{"type":"orgDevices","id":{serial},"attributes":{{{",".join(attributes)}}}'
        f'{related},"links":{{"self":{_quoted(own)}}}}}'
    )


def linkage(device: DeviceView) -> str:
    """A device's resource linkage as JSON text."""
    return f'{{"type":"orgDevices","id":{_quoted(device.serial_number)}}}'


@functools.lru_cache(maxsize=4096)  # devices imported or assigned together share their times
def _moment(value: datetime | None) -> str:
    text = when(value)
    return "null" if text is None else f'"{text}"'
