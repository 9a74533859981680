"""The DEP endpoints of part 1: `GET /session` and `GET /account` (DEP-API.md)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import falcon
import sqlalchemy as sa

from bot.context import AppContext
from bot.dep.middleware import JSON
from core.dep import account as dep_account
from core.dep import auth as dep_auth
from core.dep.auth import DepError
from core.dep.feedback import ReplacedTokenAlert

log = logging.getLogger("mdmbot.dep")

SESSION_HEADER = "X-ADM-Auth-Session"


def _json(resp: falcon.Response, body: object) -> None:
    resp.content_type = JSON
    resp.text = json.dumps(body, separators=(",", ":"))


_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def signed_uris(req: falcon.Request, public_url: str | None = None) -> list[str]:
    """The URLs the client may have signed: the public URL alone when it is set; otherwise the
    URL as received, then with the other scheme (a TLS proxy in front changes it; the scheme is
    no secret). A malformed Host names no URL at all."""
    target = req.path + (f"?{req.query_string}" if req.query_string else "")
    if public_url:
        return [public_url + target]
    host = _HOST.fullmatch(req.get_header("Host") or "")
    if host is None or int(host["port"] or 80) > 65535:
        return []
    other = "http" if req.scheme == "https" else "https"
    return [req.uri, other + req.uri[len(req.scheme) :]]


class SessionResource:
    """`GET /session`: verify the OAuth 1.0a signature and open a session."""

    def __init__(
        self,
        ctx: AppContext,
        writes: AbstractContextManager[object],
        on_replaced: Callable[[ReplacedTokenAlert], None],
        on_cases: Callable[[tuple[int, ...]], None],
    ) -> None:
        self.ctx = ctx
        self.writes = writes
        self.on_replaced = on_replaced
        self.on_cases = on_cases
        self.public_url = ctx.settings.mdmbot_dep_public_url
        self.signers = dep_auth.Signers()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer `{"auth_session_token": …}` or the refusal."""
        request = dep_auth.parse_oauth(
            req.get_header("Authorization"),
            req.method,
            signed_uris(req, self.public_url),
            req.query_string,
        )
        now, client = self.ctx.now(), req.remote_addr or ""
        verified = dep_auth.verify_known(self.signers, request, now)
        if verified is None:
            with self.ctx.transaction(readonly=True) as connection:
                verified = dep_auth.verify_request(
                    connection, self.ctx.vault, request, now, self.signers
                )
        outcome = None
        if verified.routine:
            # A routine session (nonce, session, `last seen`) may be lost to a power cut; the
            # first use of a token (installed, rotation ticks, audit) is durable (bench/README.md).
            with self._routine_writes() as connection:
                outcome = dep_auth.open_routine_session(
                    connection, verified.token_id, request, now, client=client
                )
        if outcome is None:
            with self.writes, self.ctx.unit_of_work() as session:
                outcome = dep_auth.open_session(
                    session,
                    verified.token_id,
                    request,
                    now,
                    client=client,
                    user_agent=req.user_agent or "",
                )
        if outcome.alert is not None:
            self.on_replaced(outcome.alert)
        if outcome.ticked_cases or outcome.installed:
            self.on_cases(outcome.ticked_cases)
        if outcome.error is not None:
            raise outcome.error
        _json(resp, {"auth_session_token": outcome.session_key})

    @contextmanager
    def _routine_writes(self) -> Iterator[sa.Connection]:
        """Where a routine session is recorded: one statement alone on PostgreSQL (one round
        trip), a relaxed transaction in its writers' turn on SQLite."""
        if self.ctx.engine.dialect.name == "postgresql":
            with self.ctx.statements_alone() as connection:
                yield connection
            return
        with self.writes, self.ctx.transaction(durable=False) as connection:
            yield connection


class AccountResource:
    """`GET /account`: the MDM server and organisation the session's token belongs to."""

    def __init__(self, ctx: AppContext, writes: AbstractContextManager[object]) -> None:
        self.ctx = ctx
        self.writes = writes
        settings = ctx.settings
        self.org = dep_account.Organisation(
            name=settings.mdmbot_org_name,
            email=settings.mdmbot_org_email,
            phone=settings.mdmbot_org_phone,
            address=settings.mdmbot_org_address,
            org_id=settings.mdmbot_org_id,
        )

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer the account detail."""
        now = self.ctx.now()
        key = req.get_header(SESSION_HEADER)
        with self.ctx.statements_alone() as connection:
            live, text = dep_account.session_account(connection, key, now, self.org)
        if live.stale:
            with self.writes, self.ctx.transaction(durable=False) as connection:
                dep_auth.touch_session(connection, live, now, req.remote_addr or "")
        resp.content_type = JSON
        resp.text = text


def log_replaced(alert: ReplacedTokenAlert) -> None:
    """The default when no alert channel is wired: the log says it."""
    log.warning(
        "replaced token of %s presented %d time(s), last from %s",
        alert.server_name,
        alert.attempts,
        alert.last_from,
    )


__all__ = ["AccountResource", "DepError", "SessionResource", "log_replaced"]
