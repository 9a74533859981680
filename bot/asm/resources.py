"""`GET /v1/mdmServers…` and `GET /v1/orgDevices…` (ASM-API.md §3, §4): verify the caller, call
one core use case in a read transaction, answer Apple's document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
from sqlmodel import Session

from bot.asm.auth import Gate
from bot.asm.documents import (
    DEVICE_FIELDS,
    SERVER_FIELDS,
    answer,
    base_url,
    device_json,
    encode,
    encoded_listing,
    fields,
    linkage,
    listing,
    paging,
    server_resource,
)
from bot.context import AppContext
from core.asm import inventory
from core.asm.inventory import CLASSIC, server_key
from core.asm.oauth import Caller

Read = Callable[[Session, Caller, str], dict[str, Any] | str]


class Api:
    """What every resource needs: the context, the gate, and where links point."""

    def __init__(self, ctx: AppContext, gate: Gate) -> None:
        self.ctx = ctx
        self.gate = gate

    def read(self, req: falcon.Request, resp: falcon.Response, use: Read) -> None:
        """Check the caller and run `use` in one read transaction; answer its document."""
        base = base_url(req, self.ctx.settings.mdmbot_dep_public_url)
        with self.ctx.unit_of_work(readonly=True) as session:
            caller = self.gate.caller(req, session.connection())
            document = use(session, caller, base)
        answer(resp, document)


class Servers:
    """`GET /v1/mdmServers`: without `fields[mdmServers]`, only the four classic attributes."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List the live servers."""
        names = fields(req, "mdmServers", SERVER_FIELDS) or frozenset((*CLASSIC, "devices"))
        limit, cursor = paging(req)

        def use(session: Session, caller: Caller, base: str) -> dict[str, Any]:
            page = inventory.list_servers(session, limit, cursor)
            data = [server_resource(base, i, a, names) for i, a in page.items]
            return listing(req, base, data, page, limit)

        self.api.read(req, resp, use)


class Server:
    """`GET /v1/mdmServers/{id}`: every attribute unless `fields[mdmServers]` says otherwise."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """One server."""
        names = fields(req, "mdmServers", SERVER_FIELDS)

        def use(session: Session, caller: Caller, base: str) -> dict[str, Any]:
            server_id, attributes = inventory.get_server(session, key)
            resource = server_resource(base, server_id, attributes, names)
            return {"data": resource, "links": {"self": resource["links"]["self"]}}

        self.api.read(req, resp, use)


class ServerDevices:
    """`GET /v1/mdmServers/{id}/relationships/devices`: the serials assigned to a server."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """A page of linkages."""
        limit, cursor = paging(req)

        def use(session: Session, caller: Caller, base: str) -> str:
            page = inventory.server_devices(session, key, limit, cursor, linkage)
            return encoded_listing(req, base, page.items, page, limit)

        self.api.read(req, resp, use)


class Devices:
    """`GET /v1/orgDevices`: the organisation's devices, by serial number."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A page of devices."""
        names = fields(req, "orgDevices", DEVICE_FIELDS)
        limit, cursor = paging(req)

        def use(session: Session, caller: Caller, base: str) -> str:
            page = inventory.list_devices(
                session, limit, cursor, lambda device: device_json(base, device, names)
            )
            return encoded_listing(req, base, page.items, page, limit)

        self.api.read(req, resp, use)


class Device:
    """`GET /v1/orgDevices/{id}`: one device by serial number."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, serial: str) -> None:
        """One device."""
        names = fields(req, "orgDevices", DEVICE_FIELDS)

        def use(session: Session, caller: Caller, base: str) -> str:
            device = inventory.get_device(session, serial)
            resource = device_json(base, device, names, single=True)
            own = encode(f"{base}/v1/orgDevices/{device.serial_number}")
            return f'{{"data":{resource},"links":{{"self":{own}}}}}'

        self.api.read(req, resp, use)


class AssignedServer:
    """`GET /v1/orgDevices/{id}/relationships/assignedServer` (linkage) and
    `…/assignedServer` (the server itself); 404 for a device on no server."""

    def __init__(self, api: Api, *, linkage: bool) -> None:
        self.api = api
        self.linkage = linkage

    def on_get(self, req: falcon.Request, resp: falcon.Response, serial: str) -> None:
        """The device's server."""
        names = None if self.linkage else fields(req, "mdmServers", SERVER_FIELDS)

        def use(session: Session, caller: Caller, base: str) -> dict[str, Any]:
            server_id, attributes = inventory.assigned_server(session, serial)
            own = f"{base}/v1/orgDevices/{serial}"
            if self.linkage:
                return {
                    "data": {"type": "mdmServers", "id": server_key(server_id)},
                    "links": {
                        "self": f"{own}/relationships/assignedServer",
                        "related": f"{own}/assignedServer",
                    },
                }
            shown = names or frozenset((*CLASSIC, "devices"))
            resource = server_resource(base, server_id, attributes, shown)
            return {"data": resource, "links": {"self": f"{own}/assignedServer"}}

        self.api.read(req, resp, use)
