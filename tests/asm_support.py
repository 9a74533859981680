"""The Apple port (DEP + School Manager API) on its own listener, API accounts, assertions."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

from bot.asm.app import apple_port_app
from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import HttpServer, Listener, start_in_background
from core.asm import accounts
from core.asm.oauth import APPLE_AUDIENCE, ASSERTION_TYPE
from core.devices import csv_import
from core.settings import Settings
from tests.dep_client import Headers
from tests.devices_support import OPERATOR, add_server, csv_of, serial
from tests.slack_harness import Clock

DAY = 86400


@dataclass(frozen=True)
class Account:
    """An API account as its holder has it: client id, key id, private key PEM."""

    client_id: str
    key_id: str
    key_pem: bytes
    scope: str

    def assertion(self, now: datetime, **claims: Any) -> str:
        """A client assertion as Apple's sample makes it; `claims` override its members."""
        headers = {"alg": "ES256", "kid": claims.pop("kid", self.key_id), "typ": "JWT"}
        iat = int(now.timestamp())
        payload = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": APPLE_AUDIENCE,
            "iat": iat,
            "exp": iat + 180 * DAY,
            "jti": str(uuid.uuid4()),
        } | claims
        return jwt.encode(payload, self.key_pem, algorithm="ES256", headers=headers)

    def form(self, assertion: str) -> dict[str, str]:
        """The token request's parameters."""
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": self.scope,
        }


@dataclass
class ApplePort:
    """The Apple port's app on an ephemeral port, with its context and clock."""

    ctx: AppContext
    clock: Clock
    url: str
    server: HttpServer

    def account(self, label: str = "Script", scope: str = "school") -> Account:
        """A new API account, created as `mdmbot api-account create` does."""
        with self.ctx.unit_of_work() as session:
            made = accounts.create_account(session, OPERATOR, label, scope, self.clock())
        view = made.account
        return Account(view.client_id, view.key_id, made.private_key_pem, view.scope)

    def servers(self, *names: str) -> list[int]:
        """Link servers; their ids."""
        with self.ctx.unit_of_work() as session:
            return [add_server(session, self.ctx.vault, n, self.clock()) for n in names]

    def devices(self, count: int, family: str = "iPad") -> list[str]:
        """Import `count` devices; their serials."""
        serials = [serial(i) for i in range(count)]
        with self.ctx.unit_of_work() as session:
            csv_import.import_devices(session, OPERATOR, csv_of(serials, family), self.clock())
        return serials

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        form: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request: (status, headers, parsed JSON or text)."""
        url = path if path.startswith("http") else self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data, headers = None, {"Accept": "application/json"}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, Headers(response.headers.items()), _parse(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, Headers(exc.headers.items()), _parse(exc.read())

    def token(self, account: Account) -> str:
        """An access token for the account."""
        status, _, body = self.call(
            "POST", "/auth/oauth2/token", form=account.form(account.assertion(self.clock()))
        )
        assert status == 200, body
        return str(body["access_token"])


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


@contextmanager
def apple_port(database_url: str, data_dir: Path, **settings: Any) -> Iterator[ApplePort]:
    """Serve the Apple port on 127.0.0.1 and an ephemeral port."""
    config = Settings(
        mdmbot_database_url=database_url,
        mdmbot_data_dir=data_dir,
        mdmbot_secret_key="k" * 40,
        _env_file=None,  # type: ignore[call-arg]
        **settings,
    )
    clock = Clock()
    ctx = AppContext(config, clock=clock)
    app = apple_port_app(ctx, build_dep_app(ctx))
    server = start_in_background(Listener("apple-port-test", "127.0.0.1", 0, app), 4)
    try:
        yield ApplePort(ctx, clock, f"http://127.0.0.1:{server.port}", server)
    finally:
        server.close()
        ctx.engine.dispose()
