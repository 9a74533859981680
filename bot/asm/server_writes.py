"""`POST /v1/mdmServers`, `PATCH` and `DELETE /v1/mdmServers/{id}` (Apple Business accounts)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import falcon

from bot.asm import resources
from bot.asm.documents import answer, base_url, server_resource
from bot.asm.errors import ApiError
from bot.asm.resources import Api
from core.asm import inventory
from core.asm import servers as writes
from core.asm.oauth import Caller

log = logging.getLogger("mdmbot.asm")
Created = Callable[[int, str, str], None]  # (server id, name, client id) of a new server
MAX_BODY = 256 * 1024


def _invalid(pointer: str, detail: str) -> ApiError:
    return ApiError(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", detail, source={"pointer": pointer})


def _attributes(raw: bytes, key: str | None) -> dict[str, Any]:
    """`data.attributes` of an mdmServers request (its `data.id` must name the resource)."""
    try:
        document = json.loads(raw) if len(raw) <= MAX_BODY else None
    except (ValueError, RecursionError):
        document = None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise ApiError(422, "ENTITY_UNPROCESSABLE", 'The body must be {"data": {...}} JSON')
    if data.get("type") != "mdmServers":
        raise _invalid("/data/type", "data.type must be mdmServers")
    if key is not None and data.get("id") != key:
        raise _invalid("/data/id", "data.id must be the id in the URL")
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise _invalid("/data/attributes", "data.attributes must be an object")
    return attributes


def _typed(attributes: dict[str, Any], name: str, kind: type, required: bool = False) -> Any:
    value = attributes.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind):
        raise _invalid(f"/data/attributes/{name}", f"{name} must be a {kind.__name__}")
    return value


class ServerWrites:
    """Business-only writes; a School account is refused with 403 before anything is read."""

    def __init__(
        self, api: Api, writes_turn: AbstractContextManager[object], on_created: Created
    ) -> None:
        self.api = api
        self.turn = writes_turn
        self.on_created = on_created

    def _run(self, req: falcon.Request, use: Any) -> Any:
        ctx = self.api.ctx
        raw = req.bounded_stream.read(MAX_BODY + 1)
        with self.turn, ctx.unit_of_work() as session:
            caller: Caller = self.api.gate.caller(req, session.connection())
            if caller.scope != "business":
                raise ApiError(
                    403,
                    "FORBIDDEN_ERROR",
                    "Apple School Manager API accounts cannot create, change or delete mdmServers",
                )
            return use(session, caller, raw)

    def _server(self, req: falcon.Request, resp: falcon.Response, key: str, status: int) -> None:
        base = base_url(req, self.api.ctx.settings.mdmbot_dep_public_url)
        with self.api.ctx.unit_of_work(readonly=True) as session:
            server_id, attributes = inventory.get_server(session, key)
        resource = server_resource(base, server_id, attributes, None)
        answer(resp, {"data": resource, "links": {"self": resource["links"]["self"]}}, status)

    def create(self, req: falcon.Request, resp: falcon.Response) -> None:
        """201 with the new server, which has no token yet."""
        ctx = self.api.ctx

        def use(session: Any, caller: Caller, raw: bytes) -> tuple[int, str, str]:
            attributes = _attributes(raw, None)
            name = _typed(attributes, "serverName", str, required=True)
            certificate = _typed(attributes, "serverCertificate", dict, required=True)
            release = _typed(attributes, "enableMdmDisownFlag", bool)
            server_id = writes.create_server(
                session, ctx.vault, caller, name, writes.certificate_bytes(certificate.get("data")),
                True if release is None else release, ctx.now(),
            )  # fmt: skip
            return server_id, name, caller.client_id

        server_id, name, client_id = self._run(req, use)
        self.on_created(server_id, name, client_id)
        self._server(req, resp, inventory.server_key(server_id), 201)

    def change(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """200 with the changed server."""

        def use(session: Any, caller: Caller, raw: bytes) -> int:
            attributes = _attributes(raw, key)
            if "serverCertificate" in attributes:
                raise _invalid(
                    "/data/attributes/serverCertificate",
                    "mdmbot replaces a certificate with /mdm cert or `mdmbot cert replace`",
                )
            families = _typed(attributes, "defaultProductFamilies", list)
            changes = writes.Changes(
                _typed(attributes, "serverName", str),
                _typed(attributes, "enableMdmDisownFlag", bool),
                None if families is None else [str(f) for f in families],
            )
            return writes.change_server(session, caller, key, changes, self.api.ctx.now())

        self._server(req, resp, inventory.server_key(self._run(req, use)), 200)

    def delete(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """204, or 409 while devices are assigned."""
        self._run(req, lambda s, c, raw: writes.delete_server(s, c, key, self.api.ctx.now()))
        resp.status = 204


class ServersRoute(resources.Servers):
    """`/v1/mdmServers`: GET lists, POST creates."""

    def __init__(self, api: Api, writes: ServerWrites) -> None:
        super().__init__(api)
        self.writes = writes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a server."""
        self.writes.create(req, resp)


class ServerRoute(resources.Server):
    """`/v1/mdmServers/{id}`: GET reads, PATCH changes, DELETE removes."""

    def __init__(self, api: Api, writes: ServerWrites) -> None:
        super().__init__(api)
        self.writes = writes

    def on_patch(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """Change a server."""
        self.writes.change(req, resp, key)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        """Remove a server."""
        self.writes.delete(req, resp, key)
