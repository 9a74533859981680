"""`POST /v1/orgDeviceActivities`, `GET /v1/orgDeviceActivities/{id}` and the presigned CSV log
its `downloadUrl` points at (ASM-API.md §5)."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import falcon

from bot.asm.documents import ACTIVITY_FIELDS, answer, base_url, fields, when
from bot.asm.errors import ApiError
from bot.asm.resources import Api
from core.asm import activities
from core.asm.activities import ActivityView

MAX_BODY = 4 * 1024 * 1024
LOG_LIFETIME = timedelta(hours=1)
LOG_PATH = "/activity-logs/"
LOG_KEY = "asm activity log links"


def _invalid(pointer: str, detail: str) -> ApiError:
    return ApiError(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", detail, source={"pointer": pointer})


def _member(value: Any, name: str, pointer: str) -> Any:
    if not isinstance(value, dict) or name not in value:
        raise _invalid(f"{pointer}/{name}", f"{pointer}/{name} is required")
    return value[name]


def parse_request(raw: bytes) -> tuple[str, str | None, list[str]]:
    """(activityType, mdmServer id or None, serials) from an OrgDeviceActivityCreateRequest."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(422, "ENTITY_UNPROCESSABLE", "The request body is not JSON") from None
    data = _member(document, "data", "")
    if _member(data, "type", "/data") != "orgDeviceActivities":
        raise _invalid("/data/type", "data.type must be orgDeviceActivities")
    kind = _member(_member(data, "attributes", "/data"), "activityType", "/data/attributes")
    relationships = _member(data, "relationships", "/data")
    devices = _member(_member(relationships, "devices", "/data/relationships"), "data",
                      "/data/relationships/devices")  # fmt: skip
    if not isinstance(kind, str):
        raise _invalid("/data/attributes/activityType", "activityType must be a string")
    if not isinstance(devices, list) or not all(
        isinstance(d, dict) and d.get("type") == "orgDevices" and isinstance(d.get("id"), str)
        for d in devices
    ):
        raise _invalid(
            "/data/relationships/devices/data", "devices must be a list of orgDevices linkages"
        )
    server = None
    if isinstance(relationships, dict) and "mdmServer" in relationships:
        linkage = _member(relationships["mdmServer"], "data", "/data/relationships/mdmServer")
        if (
            not isinstance(linkage, dict)
            or linkage.get("type") != "mdmServers"
            or not isinstance(linkage.get("id"), str)
        ):
            raise _invalid("/data/relationships/mdmServer/data", "mdmServer must be a linkage")
        server = linkage["id"]
    return kind, server, [d["id"] for d in devices]


class Activities:
    """`POST /v1/orgDeviceActivities`: 201 IN_PROGRESS/SUBMITTED, the moves already made."""

    def __init__(self, api: Api, writes: AbstractContextManager[object]) -> None:
        self.api = api
        self.writes = writes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Run an activity."""
        ctx = self.api.ctx
        base = base_url(req, ctx.settings.mdmbot_dep_public_url)
        raw = req.bounded_stream.read(MAX_BODY + 1)
        with self.writes, ctx.unit_of_work() as session:
            caller = self.api.gate.caller(req, session.connection())
            if len(raw) > MAX_BODY:
                raise ApiError(422, "ENTITY_UNPROCESSABLE", "The request body is too large")
            kind, server, serials = parse_request(raw)
            view = activities.run_activity(session, caller, kind, server, serials, ctx.now())
        resource = {
            "type": "orgDeviceActivities",
            "id": view.id,
            "attributes": {
                "status": "IN_PROGRESS",
                "subStatus": "SUBMITTED",
                "createdDateTime": when(view.created_at),
            },
            "links": {"self": f"{base}/v1/orgDeviceActivities/{view.id}"},
        }
        answer(resp, {"data": resource, "links": {"self": f"{base}/v1/orgDeviceActivities"}}, 201)


class Activity:
    """`GET /v1/orgDeviceActivities/{id}`: COMPLETED with a presigned `downloadUrl`."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.key = api.ctx.vault.derive_key(LOG_KEY)

    def on_get(self, req: falcon.Request, resp: falcon.Response, activity_id: str) -> None:
        """One activity."""
        names = fields(req, "orgDeviceActivities", ACTIVITY_FIELDS)

        def use(session: Any, caller: Any, base: str) -> dict[str, Any]:
            view = activities.get_activity(session, activity_id, self.api.ctx.now())
            attributes = self._attributes(base, view)
            own = f"{base}/v1/orgDeviceActivities/{view.id}"
            resource = {
                "type": "orgDeviceActivities",
                "id": view.id,
                "attributes": {k: v for k, v in attributes.items() if names is None or k in names},
                "links": {"self": own},
            }
            return {"data": resource, "links": {"self": own}}

        self.api.read(req, resp, use)

    def _attributes(self, base: str, view: ActivityView) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "status": "COMPLETED" if view.completed_at else "IN_PROGRESS",
            "subStatus": view.sub_status if view.completed_at else "PROCESSING",
            "createdDateTime": when(view.created_at),
        }
        if view.completed_at is not None:
            attributes["completedDateTime"] = when(view.completed_at)
            attributes["downloadUrl"] = self._log_url(base, view)
        return attributes

    def _log_url(self, base: str, view: ActivityView) -> str:
        """A presigned link, as Apple's blob store gives: the file name in
        `response-content-disposition` (pyaxm reads it there), `Expires` in epoch seconds."""
        expires = int((self.api.ctx.now() + LOG_LIFETIME).timestamp())
        query = urlencode({
            "response-content-disposition": _disposition(view),
            "response-content-type": "application/octet-stream",
            "Expires": str(expires),
            "Signature": activities.log_signature(self.key, view.id, expires),
        })  # fmt: skip
        return f"{base}{LOG_PATH}{view.id}?{query}"


class ActivityLog:
    """The CSV behind a `downloadUrl`: no Bearer, only a genuine, unexpired signature."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.key = api.ctx.vault.derive_key(LOG_KEY)

    def on_get(self, req: falcon.Request, resp: falcon.Response, activity_id: str) -> None:
        """Serve the log."""
        ctx = self.api.ctx
        expires, signature = req.get_param("Expires") or "", req.get_param("Signature") or ""
        if not activities.log_url_valid(self.key, activity_id, expires, signature, ctx.now()):
            raise ApiError(403, "FORBIDDEN_ERROR", "This link is not genuine or has expired")
        with ctx.unit_of_work(readonly=True) as session:
            view, content = activities.activity_log(session, activity_id, ctx.now())
        # The query's response-* values are not signed: the answer's headers are our own.
        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header("Content-Disposition", _disposition(view))
        resp.text = content


def _disposition(view: ActivityView) -> str:
    stamp = (view.completed_at or view.created_at).strftime("%b-%-d-%Y_%H-%M-%S")
    return f'attachment;filename="ABM-ActivityLog_{stamp}.csv"'
