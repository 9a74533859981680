"""The device assignment service in a process without Slack (`serve --no-slack`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text

from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import StartResponse, WsgiApp
from core.dep.feedback import ReplacedTokenAlert
from core.people import alerts

log = logging.getLogger("mdmbot.dep")
WAITING = "waiting for a process with Slack (this one runs serve --no-slack)"


def dep_app_without_slack(ctx: AppContext) -> WsgiApp:
    """The DEP app; a replaced-token report it claims is left for a process with Slack."""

    def leave_for_slack(alert: ReplacedTokenAlert) -> None:
        log.warning(
            "replaced token of %s presented %d time(s), last from %s; the alert waits for a "
            "process with Slack",
            alert.server_name,
            alert.attempts,
            alert.last_from,
        )
        with ctx.unit_of_work() as session:
            alerts.mark_failed(session, alert.delivery_id, WAITING, ctx.now())

    return build_dep_app(ctx, on_replaced=leave_for_slack)


def health_app(ctx: AppContext) -> WsgiApp:
    """`GET /healthz`: 200 with the database reachable, 503 otherwise; nothing else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz" or environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            return _reply(start_response, "404 Not Found", {"status": "not found"})
        try:
            with ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unavailable (%s)", type(exc).__name__)
            return _reply(start_response, "503 Service Unavailable", {"status": "unavailable"})
        return _reply(start_response, "200 OK", {"status": "ok", "slack": "off"})

    return app


def _reply(start_response: StartResponse, status: str, body: dict[str, str]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
