"""The token endpoint (`POST /auth/oauth2/token` and `/v2/token`) and the Bearer check with its
per-account rate limit (ASM-API.md §2, §7)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import parse_qsl

import falcon
import sqlalchemy as sa

from bot.asm.documents import base_url
from bot.asm.errors import JSON, ApiError
from bot.context import AppContext
from core.asm import oauth
from core.asm.oauth import Caller, TokenRefused

MAX_FORM = 64 * 1024


def _refuse(resp: falcon.Response, error: str, description: str) -> None:
    resp.status = 400
    resp.content_type = JSON
    resp.text = json.dumps({"error": error, "error_description": description})


class TokenResource:
    """Exchange a client assertion for an access token; parameters in the body or the query."""

    def __init__(self, ctx: AppContext, writes: AbstractContextManager[object]) -> None:
        self.ctx = ctx
        self.writes = writes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer `{"access_token","token_type","expires_in","scope"}` or 400 invalid_client."""
        raw = req.bounded_stream.read(MAX_FORM + 1)
        if len(raw) > MAX_FORM:
            _refuse(resp, "invalid_request", "the request body is too large")
            return
        params = dict(parse_qsl(req.query_string, keep_blank_values=True))
        if raw.strip():
            params |= dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
        own = base_url(req, self.ctx.settings.mdmbot_dep_public_url) + "/auth/oauth2/v2/token"
        try:
            with self.writes, self.ctx.unit_of_work() as session:
                issued = oauth.issue_access_token(session, params, own, self.ctx.now())
        except TokenRefused as exc:
            _refuse(resp, "invalid_client", exc.reason)
            return
        resp.content_type = JSON
        resp.set_header("Cache-Control", "no-store")
        resp.text = json.dumps({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        })  # fmt: skip


class RateLimit:
    """A token bucket per account: `rate` requests a minute, refilled continuously."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.buckets: dict[int, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def wait(self, account_id: int) -> int:
        """0 when the request may go now; else the whole seconds to wait (Retry-After)."""
        now, per_second = self.clock(), self.rate / 60
        with self.lock:
            tokens, then = self.buckets.get(account_id, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - then) * per_second)
            if tokens >= 1:
                self.buckets[account_id] = (tokens - 1, now)
                return 0
            self.buckets[account_id] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / per_second))


class Gate:
    """Who calls: a live access token (401 otherwise), within its account's rate (429)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.limit = RateLimit(ctx.settings.mdmbot_asm_api_rate)

    def caller(self, req: falcon.Request, connection: sa.Connection) -> Caller:
        """The calling account, checked in the request's own transaction."""
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        caller = None
        if scheme.lower() == "bearer" and token.strip():
            caller = oauth.caller_of(connection, token.strip(), self.ctx.now())
        if caller is None:
            raise ApiError(
                401,
                "NOT_AUTHORIZED",
                "Provide a valid access token: Authorization: Bearer <token> (tokens last an hour)",
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
            )
        wait = self.limit.wait(caller.account_id)
        if wait:
            raise ApiError(
                429,
                "RATE_LIMIT_EXCEEDED",
                f"This API account made more than {self.limit.rate} requests in a minute",
                headers={"Retry-After": str(wait), "X-Retry-After": str(wait)},
            )
        return caller
