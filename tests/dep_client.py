"""An MDM server's side of the device assignment service, for tests: tokens and OAuth clients.

Tokens are issued through the real core use cases and opened the way an MDM server opens them
(`openssl smime -decrypt` with its private key); requests are signed by oauthlib's OAuth 1.0a
client, with no realm as NanoDEP and MicroMDM do, or with `realm="ADM"` as the Java and Ruby
clients do.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client
from sqlmodel import Session

from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import Listener, every_request, start_in_background
from bot.serve import serve_dep
from bot.slack.services import BotServices
from core.roles import Actor
from core.settings import Settings
from core.tokens import issuance, servers
from core.tokens.token_file import parse_content
from core.vault import Vault
from tests import certs
from tests.integration import rsa_cert, smime_decrypt

NANODEP_UA = "nanodep-g-o-dep/0"


@dataclass(frozen=True)
class Creds:
    """The four OAuth credentials an MDM server finds in its token file."""

    consumer_key: str
    consumer_secret: str
    access_token: str
    access_secret: str
    token_id: int


def open_token(content: bytes, key_pem: bytes, token_id: int = 0) -> Creds:
    """Decrypt a token file with the MDM server's key and read its credentials."""
    with tempfile.TemporaryDirectory() as scratch:
        fields = parse_content(smime_decrypt(content, key_pem, Path(scratch)))
    return Creds(
        fields["consumer_key"],
        fields["consumer_secret"],
        fields["access_token"],
        fields["access_secret"],
        token_id,
    )


def add_server(session: Session, vault: Vault, name: str, now: datetime, *, actor: str) -> Creds:
    """Link a server (certificate 0) and activate its first token, as `/mdm add` does."""
    issued = servers.add_server(
        session,
        vault,
        Actor(actor, operator=True),
        name=name,
        certificate=rsa_cert(0).pem,
        release_devices=True,
        now=now,
    )
    issuance.activate_token(session, Actor(actor, operator=True), issued.token_id, now)
    return open_token(issued.content, rsa_cert(0).key_pem, issued.token_id)


def renew(session: Session, vault: Vault, name: str, now: datetime, *, actor: str) -> Creds:
    """Issue and activate a new token for the server (the old one is replaced)."""
    server = servers.find_server(session, name)
    issued = issuance.issue_token(session, vault, Actor(actor, operator=True), server, now)
    issuance.activate_token(session, Actor(actor, operator=True), issued.token_id, now)
    return open_token(issued.content, rsa_cert(0).key_pem, issued.token_id)


def oauth_header(
    creds: Creds,
    url: str,
    *,
    realm: str | None = None,
    timestamp: str | None = None,
    nonce: str | None = None,
    consumer_secret: str | None = None,
) -> str:
    """The Authorization header oauthlib's client sends for `GET url`."""
    client = Client(
        creds.consumer_key,
        client_secret=consumer_secret or creds.consumer_secret,
        resource_owner_key=creds.access_token,
        resource_owner_secret=creds.access_secret,
        signature_method=SIGNATURE_HMAC_SHA1,
        realm=realm,
        timestamp=timestamp,
        nonce=nonce,
    )
    _, headers, _ = client.sign(url, "GET")
    return str(headers["Authorization"])


class Headers(dict[str, str]):
    """An answer's headers, looked up whatever the case (granian sends the names lowercase)."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The value of header `name`, or `default`."""
        return super().get(name.lower(), default)


def call(
    url: str, headers: dict[str, str], *, user_agent: str | None = NANODEP_UA
) -> tuple[int, str, Headers]:
    """GET url with the headers NanoDEP sends; (status, body, headers) whatever the status."""
    sent = {
        "Content-Type": "application/json;charset=UTF8",
        "Accept": "application/json;charset=UTF8",
        "X-Server-Protocol-Version": "7",
        **headers,
    }
    request = urllib.request.Request(url, headers=sent, method="GET")
    if user_agent is not None:
        request.add_header("User-Agent", user_agent)
    else:
        request.remove_header("User-agent")
    try:
        with _opener().open(request, timeout=10) as response:
            return response.status, response.read().decode(), Headers(response.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), Headers(exc.headers.items())


def _opener() -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener()
    opener.addheaders = []  # urllib adds "Python-urllib/x" as the User-Agent otherwise
    return opener


def session_key(
    base: str, creds: Creds, *, realm: str | None = None, timestamp: str | None = None
) -> str:
    """Open a session and return its key (asserting success)."""
    header = oauth_header(creds, f"{base}/session", realm=realm, timestamp=timestamp)
    status, body, _ = call(f"{base}/session", {"Authorization": header})
    assert status == 200, body
    return str(json.loads(body)["auth_session_token"])


def mdm_server_installs(
    ctx: AppContext, svc: BotServices, upload: dict[str, Any], key_pem: bytes | None = None
) -> Creds:
    """The MDM server decrypts the DM'd token file and opens a session with it (clock of ctx)."""
    server = serve_dep(ctx, svc, "127.0.0.1", 0)
    try:
        creds = open_token(upload["bytes"], key_pem or certs.self_signed_rsa().key_pem)
        base = f"http://127.0.0.1:{server.port}"
        session_key(base, creds, timestamp=str(int(ctx.now().timestamp())))
    finally:
        server.close()
    return creds


def present_replaced(ctx: AppContext, svc: BotServices, creds: Creds) -> None:
    """The MDM server still presents a replaced token: mdmbot refuses it (clock of ctx)."""
    dep = serve_dep(ctx, svc, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{dep.port}/session"
        header = oauth_header(creds, url, timestamp=str(int(ctx.now().timestamp())))
        assert call(url, {"Authorization": header})[:2] == (401, "token_rejected")
    finally:
        dep.close()


@contextmanager
def dep_service(data_dir: Path) -> Iterator[str]:
    """mdmbot's device assignment service on the SQLite database in `data_dir` (a CLI's), from a
    thread of this process, answering on its event loop as `serve` does: its URL."""
    settings = Settings(
        mdmbot_database_url=f"sqlite:///{data_dir / 'mdmbot.db'}",
        mdmbot_data_dir=data_dir,
        _env_file=None,  # type: ignore[call-arg]
    )
    ctx = AppContext(settings)
    listener = Listener("dep", "127.0.0.1", 0, build_dep_app(ctx), on_loop=every_request)
    server = start_in_background(listener, 2)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()
        ctx.engine.dispose()
