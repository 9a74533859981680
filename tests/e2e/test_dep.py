"""The device assignment service through its real listener, with real OAuth 1.0a clients."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import HttpServer, Listener, start_in_background
from core.dep.feedback import ReplacedTokenAlert
from core.devices import unlink
from core.models import AuditEvent, Person, RotationItem, Token
from core.people import rotation
from core.roles import Actor
from core.settings import Settings
from tests.conftest import NOW
from tests.dep_client import (
    NANODEP_UA,
    Creds,
    add_server,
    call,
    oauth_header,
    renew,
    session_key,
)
from tests.slack_harness import Clock

ADMIN = "UADMIN01"


@dataclass
class Dep:
    """A running device assignment service and what it told the alert channel."""

    ctx: AppContext
    url: str
    server: HttpServer
    tmp_path: Path
    replaced: list[ReplacedTokenAlert] = field(default_factory=list)
    cases: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, name: str) -> Creds:
        """A linked server with an active token, as its MDM server decrypted it."""
        with self.ctx.unit_of_work() as session:
            return add_server(session, self.ctx.vault, name, self.ctx.now(), actor=ADMIN)

    def renew(self, name: str) -> Creds:
        """A new token for the server; the old one is replaced."""
        with self.ctx.unit_of_work() as session:
            return renew(session, self.ctx.vault, name, self.ctx.now(), actor=ADMIN)

    def session(self, creds: Creds, **sign: str | None) -> tuple[int, str]:
        """GET /session signed with `creds`."""
        header = oauth_header(creds, f"{self.url}/session", **sign)  # type: ignore[arg-type]
        status, body, _ = call(f"{self.url}/session", {"Authorization": header})
        return status, body

    def token(self, token_id: int) -> Token:
        """The token row as stored now."""
        with self.ctx.unit_of_work(readonly=True) as session:
            token = session.get(Token, token_id)
            assert token is not None
            session.expunge(token)
            return token


@pytest.fixture
def dep(database_url: str, tmp_path: Path) -> Iterator[Dep]:
    """The DEP app on its own HTTP listener, on SQLite and PostgreSQL."""
    settings = Settings(
        mdmbot_database_url=database_url,
        mdmbot_data_dir=tmp_path,
        mdmbot_secret_key="k" * 40,
        mdmbot_org_name="Springfield School District",
        _env_file=None,  # type: ignore[call-arg]
    )
    ctx = AppContext(settings, clock=Clock())
    running = Dep(ctx, "", None, tmp_path)  # type: ignore[arg-type]
    app = build_dep_app(ctx, on_replaced=running.replaced.append, on_cases=running.cases.append)
    running.server = start_in_background(Listener("dep-test", "127.0.0.1", 0, app), 4)
    running.url = f"http://127.0.0.1:{running.server.port}"
    yield running
    running.server.close()
    assert running.server.running and not any(t.is_alive() for t in running.server.running)
    ctx.engine.dispose()


@pytest.mark.parametrize("realm", [None, "ADM"], ids=["nanodep", "java-ruby"])
def test_session_then_account(dep: Dep, realm: str | None) -> None:
    creds = dep.add("Springfield Jamf")
    header = oauth_header(creds, f"{dep.url}/session", realm=realm)
    assert ('realm="ADM"' in header) == (realm == "ADM")
    status, body, headers = call(f"{dep.url}/session", {"Authorization": header})
    assert status == 200, body
    assert headers["Content-Type"] == "application/json;charset=UTF8"
    key = json.loads(body)["auth_session_token"]
    status, body, _ = call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})
    assert status == 200, body
    account = json.loads(body)
    assert account["server_name"] == "Springfield Jamf"
    assert account["admin_id"] == "unknown-admin@mdmbot.invalid", "never a Slack id or login"
    assert account["org_name"] == "Springfield School District"
    assert (account["org_type"], account["org_version"]) == ("edu", "v2")
    assert {"uri": "/session", "http_method": ["GET"]}.items() <= account["urls"][0].items()
    again = json.loads(call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})[1])
    assert again["server_uuid"] == account["server_uuid"], "stable per server"
    token = dep.token(creds.token_id)
    assert token.installed_at is not None and token.installed_user_agent == NANODEP_UA
    assert token.installed_from == "127.0.0.1" and token.last_used_at is not None
    with dep.ctx.unit_of_work(readonly=True) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "token.install")).one()
        assert (audit.actor, audit.subject) == ("operator:mdm-server", "Springfield Jamf")


def test_refusals_are_specific_and_open_nothing(dep: Dep, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mdmbot.dep")
    creds = dep.add("Fleet")
    url = f"{dep.url}/session"
    good = oauth_header(creds, url)
    tampered = good.replace('oauth_signature="', 'oauth_signature="AAAA', 1)
    wrong_secret = oauth_header(creds, url, consumer_secret="CS_" + "0" * 40)
    stale = oauth_header(creds, url, timestamp=str(int(time.time()) - 600))
    no_nonce = re.sub(r'oauth_nonce="[^"]*",? ?', "", good)
    doubled = good + ', oauth_nonce="again"'
    plaintext = good.replace("HMAC-SHA1", "PLAINTEXT")
    unknown = oauth_header(Creds("CK_" + "1" * 96, "CS_x", "AT_x", "AS_x", 0), url)
    table = {
        "bad signature": call(url, {"Authorization": tampered})[:2],
        "wrong secret": call(url, {"Authorization": wrong_secret})[:2],
        "stale timestamp": call(url, {"Authorization": stale})[:2],
        "missing parameter": call(url, {"Authorization": no_nonce})[:2],
        "duplicated parameter": call(url, {"Authorization": doubled})[:2],
        "unsupported method": call(url, {"Authorization": plaintext})[:2],
        "no Authorization": call(url, {})[:2],
        "unknown key": call(url, {"Authorization": unknown})[:2],
        "missing User-Agent": call(url, {"Authorization": good}, user_agent=None)[:2],
        "account, no User-Agent": call(f"{dep.url}/account", {}, user_agent=None)[:2],
        "account, unknown session": call(f"{dep.url}/account", {"X-ADM-Auth-Session": "x"})[:2],
        "account, no session": call(f"{dep.url}/account", {})[:2],
        "unknown path": call(f"{dep.url}/nope", {})[:2],
    }
    assert table == {
        "bad signature": (401, "SIGNATURE_INVALID"),
        "wrong secret": (401, "SIGNATURE_INVALID"),
        "stale timestamp": (401, "TIMESTAMP_REFUSED"),
        "missing parameter": (400, "OAUTH_PARAMETER_MISSING"),
        "duplicated parameter": (400, "OAUTH_PARAMETER_DUPLICATED"),
        "unsupported method": (400, "OAUTH_SIGNATURE_METHOD_UNSUPPORTED"),
        "no Authorization": (400, "OAUTH_HEADER_MISSING"),
        "unknown key": (401, "SIGNATURE_INVALID"),
        "missing User-Agent": (400, "USER_AGENT_MISSING"),
        "account, no User-Agent": (400, "USER_AGENT_MISSING"),
        "account, unknown session": (401, "UNAUTHORIZED"),
        "account, no session": (401, "UNAUTHORIZED"),
        "unknown path": (404, "NOT_FOUND"),
    }
    assert dep.token(creds.token_id).installed_at is None, "no refusal counts as a use"
    first = call(url, {"Authorization": good})
    replay = call(url, {"Authorization": good})
    assert first[0] == 200 and replay[:2] == (401, "NONCE_USED")
    refusals = [r.getMessage() for r in caplog.records if "/session refused" in r.getMessage()]
    assert len(refusals) == 10, "each refused /session, and only those, leaves one line"
    assert refusals[0] == "/session refused from 127.0.0.1: SIGNATURE_INVALID (bad_signature)"
    assert refusals[-1] == "/session refused from 127.0.0.1: NONCE_USED (replayed_nonce)"
    said = "".join(r.getMessage() for r in caplog.records)
    assert not any(secret in said for secret in (creds.consumer_secret, creds.access_secret))


def test_replacement_ends_sessions_and_rejects_the_old_token_with_one_warning(dep: Dep) -> None:
    old = dep.add("Mosyle")
    key = session_key(dep.url, old)
    new = dep.renew("Mosyle")
    status, body, _ = call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})
    assert (status, body) == (401, "UNAUTHORIZED")
    for _ in range(3):
        assert dep.session(old) == (401, "token_rejected")
    assert len(dep.replaced) == 1, "once per replaced token, not per attempt"
    alert = dep.replaced[0]
    assert (alert.server_name, alert.attempts, alert.last_from) == ("Mosyle", 1, "127.0.0.1")
    assert dep.token(old.token_id).rejected_attempts == 3
    assert session_key(dep.url, new)


def test_first_use_of_the_new_token_ticks_the_checklist(dep: Dep) -> None:
    old = dep.add("Jamf School")
    session_key(dep.url, old)
    with dep.ctx.unit_of_work() as session:
        case = rotation.open_case(
            session, Actor(ADMIN, operator=True), ADMIN, rotation.DEPARTURE, dep.ctx.now()
        )
    assert case is not None
    new = dep.renew("Jamf School")
    with dep.ctx.unit_of_work(readonly=True) as session:
        waiting = rotation.get_case(session, case.id)
    assert waiting.status == "open" and waiting.items[0].replaced
    assert waiting.items[0].done_at is None, "replaced, waiting for the MDM server"
    session_key(dep.url, new)
    with dep.ctx.unit_of_work(readonly=True) as session:
        done = rotation.get_case(session, case.id)
        done_by = session.exec(select(RotationItem.done_by)).all()
    assert done.status == "done" and done_by == [ADMIN]
    assert dep.cases == [(), (case.id,)], "each first use refreshes Slack, the second its checklist"


def test_sessions_last_three_idle_minutes_and_dead_tokens_are_refused(dep: Dep) -> None:
    clock = dep.ctx.clock
    assert isinstance(clock, Clock)
    creds = dep.add("Zentral")
    key = session_key(dep.url, creds, timestamp=str(int(clock().timestamp())))
    for idle in (timedelta(minutes=2), timedelta(minutes=2, seconds=50)):
        clock.now += idle
        assert call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})[0] == 200
    clock.now += timedelta(minutes=3, seconds=31)
    assert call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})[:2] == (401, "UNAUTHORIZED")

    clock.now = dep.token(creds.token_id).expires_at + timedelta(seconds=1)
    stamp = str(int(clock().timestamp()))
    assert dep.session(creds, timestamp=stamp) == (401, "token_expired")
    with dep.ctx.unit_of_work() as session:
        unlink.remove_server(session, Actor(ADMIN, operator=True), "Zentral", clock())
    assert dep.session(creds, timestamp=stamp) == (401, "token_rejected")
    assert dep.replaced == [], "a removed server's token is refused without a replacement warning"


def test_account_names_the_issuers_email_never_a_login(dep: Dep) -> None:
    with dep.ctx.unit_of_work() as session:
        session.add(Person(slack_id=ADMIN, email="it.lead@school.example", first_seen_at=NOW))
    jamf = dep.add("Jamf Pro")
    with dep.ctx.unit_of_work() as session:
        cli = add_server(session, dep.ctx.vault, "Kandji", dep.ctx.now(), actor="root")
    for creds, admin in ((jamf, "it.lead@school.example"), (cli, "unknown-admin@mdmbot.invalid")):
        key = session_key(dep.url, creds)
        account = json.loads(call(f"{dep.url}/account", {"X-ADM-Auth-Session": key})[1])
        assert account["admin_id"] == admin


def test_renewals_keep_the_consumer_key_and_old_tokens_stay_rejected(dep: Dep) -> None:
    tokens = [dep.add("NanoDEP school1")]
    for _ in range(3):
        tokens.append(dep.renew("NanoDEP school1"))
    assert len({t.consumer_key for t in tokens}) == 1, "one consumer key for the server's life"
    assert len({(t.access_token, t.consumer_secret, t.access_secret) for t in tokens}) == 4
    for old in tokens[:-1]:
        assert dep.session(old) == (401, "token_rejected")
        assert dep.token(old.token_id).rejected_attempts == 1
    assert len(dep.replaced) == 3, "each replaced token is still reported"
    assert session_key(dep.url, tokens[-1])
    forged = Creds(tokens[0].consumer_key, tokens[-1].consumer_secret, "AT_O1O2O3", "AS_x", 0)
    assert dep.session(forged) == (401, "SIGNATURE_INVALID"), "the key alone finds no token"
    mixed = Creds(
        tokens[-1].consumer_key, tokens[0].consumer_secret, tokens[-1].access_token,
        tokens[0].access_secret, 0,
    )
    assert dep.session(mixed) == (401, "SIGNATURE_INVALID"), "secrets of another token"
