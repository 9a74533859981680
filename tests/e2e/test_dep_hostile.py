"""Hostile requests to the device assignment service: each gets a 4xx code from the table in
docs/dep-service.md, never a 500 or a traceback in the log; only the Authorization header is read.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import select

from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import HttpServer, Listener, start_in_background
from core.models import Profile
from core.settings import Settings
from tests.dep_client import NANODEP_UA, Creds, add_server, oauth_header, session_key
from tests.slack_harness import Clock

PUBLIC = "https://dep.school.example"


@dataclass
class Dep:
    """A running service, and a way to send it any bytes with any Host."""

    ctx: AppContext
    port: int
    server: HttpServer

    @property
    def url(self) -> str:
        """The listener's own address."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, name: str) -> Creds:
        """A linked server with an active token."""
        with self.ctx.unit_of_work() as session:
            return add_server(session, self.ctx.vault, name, self.ctx.now(), actor="UADMIN01")

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        host: str | None = None,
    ) -> tuple[int, str]:
        """One raw request (the Host header as given); (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host if host is not None else f"127.0.0.1:{self.port}")
            conn.putheader("User-Agent", NANODEP_UA)
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


def _start(database_url: str, tmp_path: Path, **extra: str) -> Dep:
    settings = Settings(
        mdmbot_database_url=database_url,
        mdmbot_data_dir=tmp_path,
        mdmbot_secret_key="k" * 40,
        _env_file=None,  # type: ignore[call-arg]
        **extra,  # type: ignore[arg-type]
    )
    ctx = AppContext(settings, clock=Clock())
    server = start_in_background(Listener("dep-hostile", "127.0.0.1", 0, build_dep_app(ctx)), 4)
    return Dep(ctx, server.port, server)


@pytest.fixture
def dep(database_url: str, tmp_path: Path) -> Iterator[Dep]:
    """The DEP app on its own listener, with no public URL set."""
    running = _start(database_url, tmp_path)
    yield running
    running.server.close()
    running.ctx.engine.dispose()


@pytest.fixture
def pinned(database_url: str, tmp_path: Path) -> Iterator[Dep]:
    """The DEP app with MDMBOT_DEP_PUBLIC_URL set."""
    running = _start(database_url, tmp_path, mdmbot_dep_public_url=PUBLIC + "/")
    yield running
    running.server.close()
    running.ctx.engine.dispose()


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if any request logged an error (a 500 logs its traceback)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def _stamp(dep: Dep) -> str:
    return str(int(dep.ctx.now().timestamp()))


def test_deep_json_without_a_session_is_unauthorized_and_with_one_malformed(
    dep: Dep, no_tracebacks: None
) -> None:
    deep = b"[" * 200_000
    assert dep.send("POST", "/devices", {}, deep) == (401, "UNAUTHORIZED")
    key = session_key(dep.url, dep.add("Jamf"), timestamp=_stamp(dep))
    session = {"X-ADM-Auth-Session": key}
    assert dep.send("POST", "/devices", session, deep) == (400, "MALFORMED_REQUEST_BODY")
    nested = json.dumps({"devices": ["C02000000001"], "x": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]})
    assert dep.send("POST", "/devices", session, nested.encode()) == (
        400,
        "MALFORMED_REQUEST_BODY",
    )
    for scalar in (b"5", b'"text"', b"null", b"[]"):
        got = dep.send("POST", "/devices", session, scalar)
        assert got == (400, "MALFORMED_REQUEST_BODY"), scalar
    assert dep.send("POST", "/devices", session, b'{"devices": ["C02000000001"]}')[0] == 200


def test_non_ascii_and_foreign_digits_are_refused_with_codes(
    dep: Dep, no_tracebacks: None
) -> None:
    creds = dep.add("Mosyle")
    url = f"{dep.url}/session"
    good = oauth_header(creds, url, timestamp=_stamp(dep))
    superscript = oauth_header(creds, url, timestamp="%C2%B2")
    token = good.replace(f'oauth_token="{creds.access_token}"', 'oauth_token="%C3%A9t%C3%A9"')
    assert token != good
    for header in (superscript, token):
        got = dep.send("GET", "/session", {"Authorization": header})
        assert got == (400, "OAUTH_PARAMETER_MALFORMED"), header
    key = session_key(dep.url, creds, timestamp=_stamp(dep))
    for cursor in ("é.é", "\u00b2.x", "x" * 10 + ".\u0660"):
        body = json.dumps({"cursor": cursor}).encode()
        got = dep.send("POST", "/devices/sync", {"X-ADM-Auth-Session": key}, body)
        assert got == (400, "INVALID_CURSOR"), cursor


@pytest.mark.parametrize("host", ["127.0.0.1:", "127.0.0.1:abc", "127.0.0.1:99999", "[::1"])
def test_a_malformed_host_is_a_refused_signature(
    dep: Dep, no_tracebacks: None, host: str
) -> None:
    creds = dep.add("Fleet")
    header = oauth_header(creds, f"{dep.url}/session", timestamp=_stamp(dep))
    got = dep.send("GET", "/session", {"Authorization": header}, host=host)
    assert got == (401, "SIGNATURE_INVALID")


def test_oauth_parameters_come_from_the_header_only(dep: Dep, no_tracebacks: None) -> None:
    creds = dep.add("Zentral")
    header = oauth_header(creds, f"{dep.url}/session?oauth_nonce=abc", timestamp=_stamp(dep))
    got = dep.send("GET", "/session?oauth_nonce=abc", {"Authorization": header})
    assert got == (400, "OAUTH_PARAMETER_DUPLICATED"), "in the query and the header"
    query = oauth_header(creds, f"{dep.url}/session", timestamp=_stamp(dep))
    params = query[len("OAuth ") :].replace('"', "").replace(", ", "&")
    assert dep.send("GET", f"/session?{params}", {}) == (400, "OAUTH_HEADER_MISSING")
    version = oauth_header(creds, f"{dep.url}/session?oauth_version=1.0", timestamp=_stamp(dep))
    stripped = version.replace(', oauth_version="1.0"', "")
    got = dep.send("GET", "/session?oauth_version=1.0", {"Authorization": stripped})
    assert got == (400, "OAUTH_PARAMETER_MALFORMED"), "an OAuth parameter in the query alone"


def test_a_public_url_is_the_only_url_signatures_are_checked_against(
    pinned: Dep, no_tracebacks: None
) -> None:
    creds = pinned.add("Jamf School")
    stamp = _stamp(pinned)
    local = oauth_header(creds, f"{pinned.url}/session", timestamp=stamp, nonce="n1")
    assert pinned.send("GET", "/session", {"Authorization": local}) == (401, "SIGNATURE_INVALID")
    forged = oauth_header(creds, "https://evil.example/session", timestamp=stamp, nonce="n2")
    got = pinned.send("GET", "/session", {"Authorization": forged}, host="evil.example")
    assert got == (401, "SIGNATURE_INVALID"), "a Host header chosen by the caller is not trusted"
    public = oauth_header(creds, f"{PUBLIC}/session", timestamp=stamp, nonce="n3")
    status, body = pinned.send("GET", "/session", {"Authorization": public}, host="anything")
    assert status == 200 and json.loads(body)["auth_session_token"]
    plain = oauth_header(creds, "http://dep.school.example/session", timestamp=stamp, nonce="n4")
    got = pinned.send("GET", "/session", {"Authorization": plain})
    assert got == (401, "SIGNATURE_INVALID"), "the scheme is pinned too"


def test_a_public_url_must_be_an_http_url_without_query() -> None:
    for bad in ("dep.school.example", "ftp://dep.school.example/", "https://x/?a=b", "https://"):
        with pytest.raises(ValueError, match=r"mdmbot_dep_public_url"):
            Settings(mdmbot_dep_public_url=bad, _env_file=None)  # type: ignore[call-arg]
    url = "https://dep.example:8443/"
    fine = Settings(mdmbot_dep_public_url=url, _env_file=None)  # type: ignore[call-arg]
    assert fine.mdmbot_dep_public_url == "https://dep.example:8443"


def test_nul_characters_are_refused_not_sent_to_the_database(
    dep: Dep, no_tracebacks: None
) -> None:
    key = session_key(dep.url, dep.add("Kandji"), timestamp=_stamp(dep))
    session = {"X-ADM-Auth-Session": key}
    profile = {"profile_name": "a\u0000b", "url": "https://mdm.example/enroll"}
    malformed = (400, "MALFORMED_REQUEST_BODY")
    cases = [
        ("POST", "/devices", json.dumps({"devices": ["C02\u0000"]}).encode(), malformed),
        ("POST", "/devices/disown", json.dumps({"devices": ["\u0000"]}).encode(), malformed),
        ("DELETE", "/profile/devices", json.dumps({"\u0000": 1}).encode(), malformed),
        ("POST", "/profile", json.dumps(profile).encode(), malformed),
        ("GET", "/profile?profile_uuid=%00", None, (400, "NOT_FOUND")),
    ]
    for method, target, body, expected in cases:
        assert dep.send(method, target, session, body) == expected, (method, target)


def test_a_token_holder_cannot_grow_the_profile_table(dep: Dep, no_tracebacks: None) -> None:
    key = session_key(dep.url, dep.add("Addigy"), timestamp=_stamp(dep))
    session = {"X-ADM-Auth-Session": key}
    base = {"profile_name": "Students", "url": "https://mdm.example/enroll"}
    big = json.dumps(base | {"anchor_certs": ["A" * 900_000]}).encode()
    other = json.dumps(base | {"payload": "A" * 1000}).encode()
    for _ in range(20):
        assert dep.send("POST", "/profile", session, big) == (400, "MALFORMED_REQUEST_BODY")
    assert dep.send("POST", "/profile", session, other) == (400, "MALFORMED_REQUEST_BODY")
    with dep.ctx.unit_of_work(readonly=True) as db:
        assert db.exec(select(Profile)).all() == []
    status, body = dep.send("POST", "/profile", session, json.dumps(base).encode())
    assert status == 200 and json.loads(body)["profile_uuid"]
