"""The School Manager API as a Falcon WSGI app, sharing the Apple port with the DEP API: its
paths go to it, every other path to the DEP app."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import falcon

from bot.asm import activities, resources
from bot.asm.auth import Gate, TokenResource
from bot.asm.errors import (
    ApiError,
    render_api_error,
    render_core_error,
    render_http_error,
    render_unexpected,
)
from bot.asm.server_writes import Created, ServerRoute, ServersRoute, ServerWrites
from bot.context import AppContext
from bot.http import StartResponse, WsgiApp
from core import db
from core.errors import MdmbotError

log = logging.getLogger("mdmbot.asm")
PREFIXES = ("/auth/oauth2/", "/v1/", "/v1", activities.LOG_PATH)


def log_created(server_id: int, name: str, client_id: str) -> None:
    """The default when no alert channel is wired: the log says it."""
    log.warning("MDM server %s was created through the API by %s; it has no token yet",
                name, client_id)  # fmt: skip


def build_asm_falcon(
    ctx: AppContext, on_created: Created = log_created
) -> falcon.App[falcon.Request, falcon.Response]:
    """The School Manager API's own routes; `on_created` tells of servers created by API."""
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    writes = db.writer_turns(ctx.engine)
    token = TokenResource(ctx, writes)
    app.add_route("/auth/oauth2/token", token)
    app.add_route("/auth/oauth2/v2/token", token)
    api = resources.Api(ctx, Gate(ctx))
    server_writes = ServerWrites(api, writes, on_created)
    app.add_route("/v1/mdmServers", ServersRoute(api, server_writes))
    app.add_route("/v1/mdmServers/{key}", ServerRoute(api, server_writes))
    app.add_route("/v1/mdmServers/{key}/relationships/devices", resources.ServerDevices(api))
    app.add_route("/v1/orgDevices", resources.Devices(api))
    app.add_route("/v1/orgDevices/{serial}", resources.Device(api))
    app.add_route(
        "/v1/orgDevices/{serial}/relationships/assignedServer",
        resources.AssignedServer(api, linkage=True),
    )
    app.add_route(
        "/v1/orgDevices/{serial}/assignedServer", resources.AssignedServer(api, linkage=False)
    )
    app.add_route("/v1/orgDeviceActivities", activities.Activities(api, writes))
    app.add_route("/v1/orgDeviceActivities/{activity_id}", activities.Activity(api))
    app.add_route(activities.LOG_PATH + "{activity_id}", activities.ActivityLog(api))
    app.add_error_handler(Exception, render_unexpected)
    app.add_error_handler(falcon.HTTPError, render_http_error)
    app.add_error_handler(MdmbotError, render_core_error)
    app.add_error_handler(ApiError, render_api_error)
    return app


def apple_port_app(ctx: AppContext, dep: WsgiApp, on_created: Created = log_created) -> WsgiApp:
    """The Apple port: the School Manager API's paths, and the DEP API for the rest."""
    api = build_asm_falcon(ctx, on_created)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIXES) or path == "/v1":
            return api(environ, start_response)
        return dep(environ, start_response)

    return app
