"""The DEP device endpoints of part 2 (DEP-API.md "Endpoints"): fetch, sync, details, disown and
profiles. Each verifies the session, calls one core use case for the session's server, answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import falcon
from sqlmodel import Session

from bot.context import AppContext
from bot.dep.resources import SESSION_HEADER, _json
from core.dep import auth as dep_auth
from core.dep import devices as dep_devices
from core.dep import profiles as dep_profiles
from core.dep.errors import refused

MAX_BODY = 1024 * 1024
# (session, cursor key, server id, parsed body or query, now) -> the answer's JSON
UseCase = Callable[[Session, bytes, int, Any, datetime], dict[str, Any]]


MAX_DEPTH = 4  # ours: Apple's request bodies nest two levels ({"devices": [serial]})


def _read(req: falcon.Request) -> Callable[[], object]:
    """Read the body now (bounded); parse it only once the session is known to be good."""
    raw = req.bounded_stream.read(MAX_BODY + 1)
    return lambda: parse_body(raw)


def parse_body(raw: bytes) -> object:
    """The JSON body (clients send `application/json;charset=UTF8`); none is `{}`."""
    if len(raw) > MAX_BODY:
        raise refused("MALFORMED_REQUEST_BODY")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise refused("MALFORMED_REQUEST_BODY") from exc
    containers: list[tuple[dict[str, object] | list[object], int]] = []
    if isinstance(body, dict | list):
        containers.append((body, 1))
    while containers:
        value, depth = containers.pop()
        keys: Iterable[object] = value.keys() if isinstance(value, dict) else ()
        inner: Iterable[object] = value.values() if isinstance(value, dict) else value
        if depth > MAX_DEPTH or any(_nul(v) for v in (*keys, *inner)):
            raise refused("MALFORMED_REQUEST_BODY")
        containers.extend((v, depth + 1) for v in inner if isinstance(v, dict | list))
    return body


def _nul(value: object) -> bool:
    """A NUL character: no serial or profile field holds one, and PostgreSQL text cannot."""
    return isinstance(value, str) and "\x00" in value


class DeviceEndpoints:
    """Runs a use case for the server whose session the request carries."""

    def __init__(self, ctx: AppContext, writes: AbstractContextManager[object]) -> None:
        self.ctx = ctx
        self.writes = writes
        self.key = ctx.vault.derive_key(dep_devices.CURSOR_KEY)

    def serve(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        use_case: UseCase,
        payload: Callable[[], object],
        *,
        write: bool,
    ) -> None:
        """Check the session, run the use case in one unit of work, answer its JSON."""
        now, header, client = self.ctx.now(), req.get_header(SESSION_HEADER), req.remote_addr or ""
        if write:
            with self.writes, self.ctx.unit_of_work() as session:
                live, answer = self._run(session, header, use_case, payload, now)
                if live.stale:
                    dep_auth.touch_session(session.connection(), live, now, client)
        else:
            with self.ctx.unit_of_work(readonly=True) as session:
                live, answer = self._run(session, header, use_case, payload, now)
            if live.stale:
                with self.writes, self.ctx.unit_of_work() as session:
                    dep_auth.touch_session(session.connection(), live, now, client)
        _json(resp, answer)

    def _run(
        self,
        session: Session,
        header: str | None,
        use_case: UseCase,
        payload: Callable[[], object],
        now: datetime,
    ) -> tuple[dep_auth.LiveSession, dict[str, Any]]:
        live = dep_auth.check_session(session.connection(), header, now)
        server_id = dep_devices.server_of_token(session, live.token_id)
        return live, use_case(session, self.key, server_id, payload(), now)


def _fetch(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_devices.fetch_devices(s, key, server, body, now)


def _sync(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_devices.sync_devices(s, key, server, body, now)


def _details(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_devices.device_details(s, server, body)


def _disown(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_devices.disown_devices(s, server, body, now)


def _define(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_profiles.define_profile(s, server, body, now)


def _get(s: Session, key: bytes, server: int, uuid: Any, now: datetime) -> dict[str, Any]:
    return dep_profiles.get_profile(s, server, uuid)


def _assign(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_profiles.assign_profile(s, server, body, now)


def _clear(s: Session, key: bytes, server: int, body: Any, now: datetime) -> dict[str, Any]:
    return dep_profiles.clear_profiles(s, server, body, now)


class Route:
    """One path: which use case answers each method, and whether it writes."""

    def __init__(self, endpoints: DeviceEndpoints, **methods: tuple[UseCase, bool]) -> None:
        self.endpoints = endpoints
        self.methods = methods

    def _answer(self, method: str, req: falcon.Request, resp: falcon.Response) -> None:
        if method not in self.methods:
            raise falcon.HTTPMethodNotAllowed([m.upper() for m in self.methods])
        use_case, write = self.methods[method]
        if method == "get":
            uuid = req.get_param("profile_uuid")
            payload: Callable[[], object] = lambda: uuid  # noqa: E731
        else:
            payload = _read(req)
        self.endpoints.serve(req, resp, use_case, payload, write=write)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET."""
        self._answer("get", req, resp)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST."""
        self._answer("post", req, resp)

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        """PUT."""
        self._answer("put", req, resp)

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        """DELETE."""
        self._answer("delete", req, resp)


def add_routes(
    app: falcon.App[falcon.Request, falcon.Response],
    ctx: AppContext,
    writes: AbstractContextManager[object],
) -> None:
    """Add the device and profile endpoints to the DEP app."""
    endpoints = DeviceEndpoints(ctx, writes)
    app.add_route("/server/devices", Route(endpoints, post=(_fetch, False)))
    app.add_route("/devices/sync", Route(endpoints, post=(_sync, False)))
    app.add_route("/devices", Route(endpoints, post=(_details, False)))
    app.add_route("/devices/disown", Route(endpoints, post=(_disown, True)))
    app.add_route("/profile", Route(endpoints, post=(_define, True), get=(_get, False)))
    app.add_route(
        "/profile/devices",
        Route(endpoints, put=(_assign, True), post=(_assign, True), delete=(_clear, True)),
    )
