"""What every DEP request goes through: the User-Agent rule, JSON answers, metrics, errors."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import falcon

from bot import metrics
from core.dep.auth import DepError

log = logging.getLogger("mdmbot.dep")

JSON = "application/json;charset=UTF8"  # Apple's exact Content-Type
ENDPOINTS = frozenset(
    {
        "/session",
        "/account",
        "/server/devices",
        "/devices/sync",
        "/devices",
        "/devices/disown",
        "/profile",
        "/profile/devices",
    }
)


class DepMiddleware:
    """Refuses requests without a User-Agent (Apple: 400 USER_AGENT_MISSING) and counts answers."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Check the User-Agent before routing."""
        if not req.user_agent:
            raise DepError(400, "USER_AGENT_MISSING", "user_agent_missing")

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Count the answer by endpoint and status."""
        endpoint = req.path if req.path in ENDPOINTS else "other"
        metrics.dep_requests.labels(endpoint, str(resp.status_code)).inc()


def render_dep_error(
    req: falcon.Request, resp: falcon.Response, ex: DepError, params: dict[str, Any]
) -> None:
    """A refusal: its status and the bare code as the body (clients match it as a substring)."""
    resp.status = ex.status
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = ex.code
    if req.path == "/session":
        metrics.dep_session_failures.labels(ex.reason).inc()
        log.warning(  # never the Authorization header: the code, the reason and who asked
            "/session refused from %s: %s (%s)", req.remote_addr or "?", ex.code, ex.reason
        )


def render_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    """Falcon's own refusals (unknown path, wrong method) as bare codes too."""
    resp.status = ex.status
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
        ex.status_code, "MALFORMED_REQUEST"
    )
    if ex.headers:
        resp.set_headers(ex.headers)


def render_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Anything else: 500 with a reference id that appears in the log, never a stack trace."""
    if isinstance(ex, falcon.HTTPError):
        render_http_error(req, resp, ex, params)
        return
    reference = uuid.uuid4().hex[:8]
    log.exception("DEP %s %s failed (ref %s)", req.method, req.path, reference)
    resp.status = 500
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = f"INTERNAL_ERROR ref {reference}"
