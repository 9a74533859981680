"""The School Manager API's token endpoint and Bearer check, through the real Apple-port listener:
what Apple accepts is accepted, every refusal is Apple's (400 invalid_client, 401, 403, 429)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.asm import accounts
from tests.asm_support import DAY, Account, ApplePort, apple_port
from tests.devices_support import OPERATOR


@pytest.fixture
def port(database_url: str, tmp_path: Path) -> Iterator[ApplePort]:
    with apple_port(database_url, tmp_path) as running:
        yield running


def _token_call(port: ApplePort, account: Account, assertion: str, **extra: str) -> Any:
    return port.call("POST", "/auth/oauth2/token", form=account.form(assertion) | extra)


def _refused(answer: tuple[int, dict[str, str], Any]) -> str:
    status, _, body = answer
    assert status == 400 and body["error"] == "invalid_client", answer
    return str(body["error_description"])


def test_a_token_from_the_body_or_the_query_on_either_path(port: ApplePort) -> None:
    account = port.account("Inventory")
    assertion = account.assertion(port.clock())
    status, headers, body = _token_call(port, account, assertion)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, "school.api")
    # Apple's sample: every parameter in the query string of a POST with no body; a reused
    # (cached, 180-day) assertion is accepted.
    status, _, again = port.call("POST", "/auth/oauth2/v2/token", query=account.form(assertion))
    assert status == 200 and again["access_token"] != body["access_token"]
    # This server's own token URL is an accepted audience too.
    own = account.assertion(port.clock(), aud=port.url + "/auth/oauth2/v2/token")
    assert _token_call(port, account, own)[0] == 200
    status, _, servers = port.call("GET", "/v1/mdmServers", token=body["access_token"])
    assert status == 200 and servers["data"] == []


def test_assertions_apple_refuses_are_refused(port: ApplePort) -> None:
    account, now = port.account(), port.clock()
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = Account(account.client_id, account.key_id, other, account.scope)
    assert "signature" in _refused(_token_call(port, account, forged.assertion(now)))
    wrong_aud = account.assertion(now, aud="https://account.apple.com/auth/oauth2/token")
    assert "aud" in _refused(_token_call(port, account, wrong_aud))
    iat = int((now - timedelta(days=2)).timestamp())
    expired = account.assertion(now, iat=iat, exp=iat + DAY)
    assert "expired" in _refused(_token_call(port, account, expired))
    long_lived = account.assertion(now, exp=int(now.timestamp()) + 181 * DAY)
    assert "180 days" in _refused(_token_call(port, account, long_lived))
    assert "kid" in _refused(_token_call(port, account, account.assertion(now, kid="nope")))
    assert "sub" in _refused(_token_call(port, account, account.assertion(now, sub="x")))
    wrong_scope = _token_call(port, account, account.assertion(now), scope="business.api")
    assert "scope" in _refused(wrong_scope)
    assert "JWT" in _refused(_token_call(port, account, "not-a-jwt"))
    unknown = Account("SCHOOLAPI.00000000-0000-4000-8000-000000000000", account.key_id,
                      account.key_pem, "school.api")  # fmt: skip
    _refused(_token_call(port, unknown, unknown.assertion(now)))
    grant = _token_call(port, account, account.assertion(now), grant_type="password")
    assert "grant_type" in _refused(grant)


def test_a_revoked_account_gets_no_token_and_its_tokens_stop(port: ApplePort) -> None:
    account = port.account()
    token = port.token(account)
    assert port.call("GET", "/v1/orgDevices", token=token)[0] == 200
    with port.ctx.unit_of_work() as session:
        accounts.revoke_account(session, OPERATOR, account.client_id, port.clock())
    status, _, body = port.call("GET", "/v1/orgDevices", token=token)
    assert status == 401 and body["errors"][0]["status"] == "401"
    _refused(_token_call(port, account, account.assertion(port.clock())))


def test_no_bearer_or_an_expired_token_is_401_with_errors(port: ApplePort) -> None:
    status, headers, body = port.call("GET", "/v1/mdmServers")
    assert status == 401 and headers["Content-Type"] == "application/json"
    error = body["errors"][0]
    assert error["status"] == "401" and error["code"] == "NOT_AUTHORIZED"
    assert error["title"] and error["detail"] and error["id"]
    token = port.token(port.account())
    port.clock.now += timedelta(seconds=3601)
    assert port.call("GET", "/v1/mdmServers", token=token)[0] == 401
    assert port.call("GET", "/v1/mdmServers", token="garbage")[0] == 401


def test_a_school_account_cannot_write_mdm_servers(port: ApplePort) -> None:
    token = port.token(port.account())
    body = {"data": {"type": "mdmServers", "attributes": {"serverName": "X"}}}
    status, _, answer = port.call("POST", "/v1/mdmServers", token=token, body=body)
    assert status == 403 and answer["errors"][0]["status"] == "403"
    (server,) = port.servers("Jamf")
    for method in ("PATCH", "DELETE"):
        status, _, answer = port.call(method, f"/v1/mdmServers/{server:032X}", token=token)
        assert status == 403 and answer["errors"][0]["code"] == "FORBIDDEN_ERROR"
    assert port.call("POST", "/v1/mdmServers", body=body)[0] == 401


def test_an_account_over_its_rate_gets_429_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    with apple_port(database_url, tmp_path, mdmbot_asm_api_rate=3) as port:
        busy, calm = port.account("busy"), port.account("calm")
        token, other = port.token(busy), port.token(calm)
        assert [port.call("GET", "/v1/orgDevices", token=token)[0] for _ in range(3)] == [200] * 3
        status, headers, body = port.call("GET", "/v1/orgDevices", token=token)
        assert status == 429 and body["errors"][0]["status"] == "429"
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert port.call("GET", "/v1/orgDevices", token=other)[0] == 200  # per account
