"""Token secrets at rest, and token files that match what the database holds."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core.db import unit_of_work
from core.errors import ConfigError
from core.models import Token
from core.tokens import issuance, servers
from core.tokens.token_file import parse_content
from core.vault import Vault
from tests.conftest import NOW
from tests.integration import OPERATOR, rsa_cert, smime_decrypt


def _add(session: Session, vault: Vault, name: str, now: datetime) -> issuance.IssuedToken:
    issued = servers.add_server(
        session,
        vault,
        OPERATOR,
        name=name,
        certificate=rsa_cert().pem,
        release_devices=True,
        now=now,
    )
    issuance.activate_token(session, OPERATOR, issued.token_id, now)
    return issued


def test_secrets_are_stored_encrypted_and_match_the_token_file(
    engine: sa.Engine, vault: Vault, tmp_path: Path
) -> None:
    with unit_of_work(engine) as session:
        issued = _add(session, vault, "Jamf Pro", NOW)

    content = smime_decrypt(issued.content, rsa_cert().key_pem, tmp_path)
    fields = parse_content(content)
    with engine.connect() as conn:
        raw = conn.execute(
            sa.text("SELECT consumer_key, secrets FROM token WHERE id = :id"),
            {"id": issued.token_id},
        ).one()

    # The credentials an MDM server receives are not readable in the database.
    for secret in ("consumer_secret", "access_token", "access_secret"):
        assert fields[secret] not in raw.secrets
        assert fields[secret][:3] in ("CS_", "AT_", "AS_")
    for prefix in ("CS_", "AT_", "AS_"):
        assert prefix not in raw.secrets
    # …but the vault gives them back, so mdmbot can verify the server later.
    assert raw.consumer_key == fields["consumer_key"]
    assert json.loads(vault.decrypt(raw.secrets)) == {
        "consumer_secret": fields["consumer_secret"],
        "access_token": fields["access_token"],
        "access_secret": fields["access_secret"],
    }
    with pytest.raises(ConfigError, match="MDMBOT_SECRET_KEY"):
        Vault(b"1" * 43 + b"=").decrypt(raw.secrets)

    assert fields["access_token_expiry"] == "2027-11-27T14:03:34Z"
    assert fields["access_token"].endswith(f"O{int(NOW.timestamp() * 1000)}")
    assert issued.filename == "Jamf_Pro_Token_2026-11-27T14-03-34Z_smime.p7m"
    assert content.startswith(b"Content-Type: text/plain;charset=UTF-8\r\n")


def test_token_views_and_repr_never_show_credentials(session: Session, vault: Vault) -> None:
    issued = _add(session, vault, "Jamf", NOW)
    row = session.get(Token, issued.token_id)
    assert row is not None

    shown = repr(issued) + repr(issuance.list_tokens(session))
    shown += json.dumps([asdict(t) for t in issuance.list_tokens(session)], default=str)
    shown += repr(servers.list_servers(session))

    assert row.consumer_key not in shown
    for prefix in ("CK_", "CS_", "AT_", "AS_"):
        assert prefix not in shown


def test_a_token_issued_on_29_february_expires_on_28_february(
    engine: sa.Engine, vault: Vault, tmp_path: Path
) -> None:
    leap = datetime(2028, 2, 29, 23, 30, 5, 123456, tzinfo=UTC)
    cert = rsa_cert()
    with unit_of_work(engine) as session:
        issued = _add(session, vault, "Leap", leap)

    with unit_of_work(engine) as session:
        [view] = issuance.list_tokens(session)
    expected = datetime(2029, 2, 28, 23, 30, 5, tzinfo=UTC)
    assert view.expires_at == issued.expires_at == expected
    assert view.issued_at == leap.replace(microsecond=123000)
    fields = parse_content(smime_decrypt(issued.content, cert.key_pem, tmp_path))
    assert fields["access_token_expiry"] == "2029-02-28T23:30:05Z"


def test_each_token_has_fresh_credentials_but_the_servers_consumer_key(
    session: Session, vault: Vault, tmp_path: Path
) -> None:
    first = _add(session, vault, "Jamf", NOW)
    server = servers.find_server(session, "Jamf")
    second = issuance.issue_token(session, vault, OPERATOR, server, NOW)
    third = issuance.issue_token(session, vault, OPERATOR, server, NOW, new_consumer_key=True)

    a, b, c = (
        parse_content(smime_decrypt(issued.content, rsa_cert().key_pem, tmp_path))
        for issued in (first, second, third)
    )
    assert a["consumer_key"] == b["consumer_key"] != c["consumer_key"]
    for field in ("consumer_secret", "access_token", "access_secret"):
        assert len({a[field], b[field], c[field]}) == 3


def test_the_file_again_is_the_same_token_for_its_downloader_only(
    engine: sa.Engine, vault: Vault, tmp_path: Path
) -> None:
    from core.errors import InvalidInput, PermissionDenied
    from core.roles import Actor
    from core.tokens.resend import token_file_again

    with unit_of_work(engine) as session:
        issued = _add(session, vault, "Jamf Pro", NOW)
        again = token_file_again(session, vault, OPERATOR, issued.token_id, NOW)
        with pytest.raises(PermissionDenied, match="Only the person who downloaded this token"):
            token_file_again(session, vault, Actor("U0SOMEONE"), issued.token_id, NOW)
        with pytest.raises(InvalidInput, match="has expired: renew it instead"):
            token_file_again(session, vault, OPERATOR, issued.token_id, issued.expires_at)
    assert again.filename == issued.filename
    first = smime_decrypt(issued.content, rsa_cert().key_pem, tmp_path)
    assert smime_decrypt(again.content, rsa_cert().key_pem, tmp_path) == first

    with unit_of_work(engine) as session:
        token = session.get(Token, issued.token_id)
        assert token is not None
        token.installed_at = NOW
        session.add(token)
    with unit_of_work(engine) as session, pytest.raises(InvalidInput, match="already uses"):
        token_file_again(session, vault, OPERATOR, issued.token_id, NOW)
    with unit_of_work(engine) as session:
        renewed = issuance.issue_token(
            session, vault, OPERATOR, servers.find_server(session, "Jamf Pro"), NOW
        )
        issuance.activate_token(session, OPERATOR, renewed.token_id, NOW)
    with unit_of_work(engine) as session, pytest.raises(InvalidInput, match="was replaced"):
        token_file_again(session, vault, OPERATOR, issued.token_id, NOW)
