"""Apple's error documents (`{"errors": [...]}`, `status` a string) and the refusals behind them."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import falcon

from core.errors import InvalidInput, MdmbotError, NotFound, PermissionDenied

log = logging.getLogger("mdmbot.asm")
JSON = "application/json"
TITLES = {
    400: "An error occurred with your request",
    401: "Authentication credentials are missing or invalid",
    403: "Request not authorized",
    404: "The specified resource doesn't exist",
    405: "The method is not allowed for the requested resource",
    409: "Request entity error(s)",
    422: "Unprocessable request entity error(s)",
    429: "Too Many Requests",
    500: "An unexpected error occurred",
}


class ApiError(Exception):
    """A refusal the API answers with an ErrorResponse."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        source: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.source, self.headers = source, headers or {}


def body(status: int, code: str, detail: str, source: dict[str, str] | None = None) -> str:
    """An ErrorResponse document with one error."""
    error: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": str(status),
        "code": code,
        "title": TITLES.get(status, TITLES[400]),
        "detail": detail,
    }
    if source:
        error["source"] = source
    return json.dumps({"errors": [error]}, separators=(",", ":"))


def from_core(exc: MdmbotError) -> ApiError:
    """A core refusal as the API's: 404, 403, or 409 for input the rules refuse."""
    if isinstance(exc, NotFound):
        return ApiError(404, "NOT_FOUND", exc.message)
    if isinstance(exc, PermissionDenied):
        return ApiError(403, "FORBIDDEN_ERROR", exc.message)
    if isinstance(exc, InvalidInput) and exc.message.startswith("The cursor"):
        return ApiError(400, "PARAMETER_ERROR.INVALID", exc.message, source={"parameter": "cursor"})
    return ApiError(409, "ENTITY_ERROR", exc.message)


def render_api_error(
    req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict[str, Any]
) -> None:
    """Answer an ApiError."""
    resp.status = ex.status
    resp.content_type = JSON
    resp.text = body(ex.status, ex.code, ex.detail, ex.source)
    resp.set_headers(ex.headers)


def render_core_error(
    req: falcon.Request, resp: falcon.Response, ex: MdmbotError, params: dict[str, Any]
) -> None:
    """Answer a core refusal."""
    render_api_error(req, resp, from_core(ex), params)


def render_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    """Falcon's own refusals (unknown path, wrong method) as ErrorResponses."""
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(ex.status_code, "PARAMETER_ERROR")
    detail = {404: f"There is no resource at {req.path[:200]}"}.get(
        ex.status_code, ex.title or "The request is malformed"
    )
    render_api_error(
        req, resp, ApiError(ex.status_code, code, detail, headers=dict(ex.headers or {})), params
    )


def render_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Anything else: 500 with a reference that appears in the log, never a stack trace."""
    if isinstance(ex, falcon.HTTPError):
        render_http_error(req, resp, ex, params)
        return
    reference = uuid.uuid4().hex[:8]
    log.exception("School Manager API %s %s failed (ref %s)", req.method, req.path, reference)
    render_api_error(
        req, resp, ApiError(500, "UNEXPECTED_ERROR", f"Unexpected error (ref {reference})"), params
    )
