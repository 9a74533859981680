"""Taking in Apple's tokens: checked first, the previous one superseded, installed through the
connection (expiry from the MDM server's answer), in use from Apple's last connection, and the
departure checklist closed (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography import x509
from sqlmodel import Session, col, select

from core import db
from core.apple.envelope import TokenEnvelope, read_token_file
from core.apple.intake import matching_servers, take_in
from core.apple.usage import note_apple_use
from core.connections import installs, links
from core.connections.server_state import State
from core.connections.state import server_state
from core.errors import InvalidInput, PermissionDenied
from core.models import AuditEvent, Server, Token, TokenStatus
from core.people.alerts import claim_due_alerts
from core.people.persons import grant_role
from core.people.rotation import get_case, record_departure
from core.roles import Actor, Role
from core.tokens.resend import token_file_again
from core.tokens.servers import add_server, find_server
from core.tokens.token_file import envelope, generate_credentials, render_content, token_filename
from core.vault import Vault
from tests.conftest import NOW
from tests.fakemdm import NANODEP_KEY, FakeNanoDep, decrypt_token
from tests.fakemdm import installer as mdm_installer
from tests.integration import OPERATOR, count, rsa_cert

ALICE, BOB = Actor("U0ALICE"), Actor("U0BOB")


def apple_token(cert: x509.Certificate, name: str = "School One", at=NOW) -> TokenEnvelope:
    """A token as Apple issues it for `cert`, with Apple's file name (issued at `at`)."""
    creds = generate_credentials(at)
    return read_token_file(envelope(render_content(creds), cert), token_filename(name, at))


def _server(session: Session, vault: Vault, name: str = "School One", index: int = 0) -> Server:
    grant_role(session, OPERATOR, ALICE.user_id, Role.SITE_MANAGER, NOW)
    grant_role(session, OPERATOR, BOB.user_id, Role.DEVICE_ENROLLMENT_MANAGER, NOW)
    add_server(session, vault, OPERATOR, name=name, certificate=rsa_cert(index).pem,
               release_devices=True, now=NOW)  # fmt: skip
    return find_server(session, name)


def test_a_token_is_taken_in_and_supersedes_the_previous_one(
    engine: sa.Engine, vault: Vault
) -> None:
    cert = rsa_cert(0).certificate
    with db.unit_of_work(engine) as s:
        server = _server(s, vault)
        first = take_in(s, vault, ALICE, server, apple_token(cert), NOW, via="cli")
    assert first.checked and first.install_id is None and first.superseded == ()
    assert first.expires_at == NOW.replace(year=NOW.year + 1, microsecond=0)
    assert first.expiry_from == "file name"
    later = NOW + timedelta(days=200)
    with db.unit_of_work(engine) as s:
        second = take_in(
            s, vault, BOB, find_server(s, "School One"), apple_token(cert, at=later), later,
            via="slack",
        )  # fmt: skip
    assert second.superseded == (first.token_id,)
    with db.unit_of_work(engine) as s:
        old, new = s.get(Token, first.token_id), s.get(Token, second.token_id)
        assert old is not None and new is not None
        assert (old.status, old.reason) == (TokenStatus.SUPERSEDED, "new token")
        assert (new.status, new.source, new.downloaded_by) == ("active", "apple", BOB.user_id)
        # Kept encrypted: a Fernet token of the vault's (a random one held "MII" now and then).
        assert new.secrets.startswith("gAAAAA") and vault.decrypt(new.secrets)
        actions = s.exec(select(AuditEvent.action).order_by(col(AuditEvent.id))).all()
        assert actions.count("token.import") == 2
        again = token_file_again(s, vault, BOB, second.token_id, later)
    assert again.filename == token_filename("School One", later)
    fields = decrypt_token(again.content, cert, rsa_cert(0).key)  # type: ignore[arg-type]
    assert fields["access_token_expiry"], "the very file Apple issued, offered again by DM"


def test_a_wrong_file_changes_nothing(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        server = _server(s, vault)
        before = count(s, Token)
    refusals = []
    for token, when in (
        (apple_token(rsa_cert(1).certificate), NOW),  # another certificate
        (apple_token(rsa_cert(0).certificate, at=NOW - timedelta(days=400)), NOW),  # expired
    ):
        with db.unit_of_work(engine) as s, pytest.raises(InvalidInput) as refused:
            take_in(s, vault, ALICE, find_server(s, "School One"), token, when, via="cli")
        refusals.append(refused.value.message)
    assert "encrypted to another certificate" in refusals[0]
    assert "expired" in refusals[1] and "by its file name" in refusals[1]
    token = apple_token(rsa_cert(0).certificate)
    with db.unit_of_work(engine) as s:
        take_in(s, vault, ALICE, server, token, NOW, via="cli")
    with db.unit_of_work(engine) as s, pytest.raises(InvalidInput, match="already taken in"):
        take_in(s, vault, ALICE, find_server(s, "School One"), token, NOW, via="cli")
    with db.unit_of_work(engine) as s, pytest.raises(PermissionDenied):
        take_in(s, vault, Actor("U0NOBODY"), find_server(s, "School One"), token, NOW, via="x")
    with db.unit_of_work(engine) as s:
        assert count(s, Token) == before + 1


def test_a_dropped_file_finds_its_server_by_certificate(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        _server(s, vault, "School One", 0)
        _server(s, vault, "School Two", 1)
        found = matching_servers(s, apple_token(rsa_cert(1).certificate))
        none = matching_servers(s, apple_token(rsa_cert(2).certificate))
        assert [x.name for x in found] == ["School Two"] and none == []


def test_installed_through_nanodep_with_its_expiry_then_in_use_from_apple(
    engine: sa.Engine, vault: Vault
) -> None:
    fake = FakeNanoDep().start()
    try:
        spec = links.make_spec("nanodep", url=fake.url, dep_name="school1", api_key=NANODEP_KEY)
        pem = mdm_installer().fetch_certificate(spec, "school1")
        cert = x509.load_pem_x509_certificate(pem)
        with db.unit_of_work(engine) as s:
            grant_role(s, OPERATOR, ALICE.user_id, Role.SITE_MANAGER, NOW)
            add_server(s, vault, OPERATOR, name="School One", certificate=pem,
                       release_devices=True, now=NOW)  # fmt: skip
            server = find_server(s, "School One")
            links.save_connection(s, vault, OPERATOR, server, spec, NOW)
            server_id = server.id
        apple_issue = NOW - timedelta(days=2)
        creds = generate_credentials(apple_issue)
        token = read_token_file(envelope(render_content(creds), cert), "smime.p7m")
        with db.unit_of_work(engine) as s:
            taken = take_in(s, vault, ALICE, find_server(s, "School One"), token, NOW, via="cli")
        assert taken.install_id is not None and taken.expiry_from == "time taken in"
        outcome = installs.attempt(
            lambda: db.unit_of_work(engine), vault, mdm_installer(), taken.install_id, "t",
            lambda: NOW + timedelta(minutes=1),
        )  # fmt: skip
        assert outcome is not None and outcome.installed, outcome
        assert fake.tokens["school1"]["access_token"] == creds.access_token
        with db.unit_of_work(engine) as s:
            stored = s.get(Token, taken.token_id)
            assert stored is not None and stored.expires_at == creds.expires_at, "NanoDEP's word"
            _, state = server_state(s, server_id or 0, NOW + timedelta(minutes=2))
            assert state.state is State.INSTALLED
            server = s.get(Server, server_id)
            assert server is not None
            server.apple_last_connected_at = NOW  # before the install: the old token's
            s.add(server)
            assert note_apple_use(s, NOW + timedelta(minutes=2)) == ()
            server.apple_last_connected_at = NOW + timedelta(minutes=3)
            s.add(server)
            note_apple_use(s, NOW + timedelta(minutes=5))
        with db.unit_of_work(engine) as s:
            stored = s.get(Token, taken.token_id)
            assert stored is not None and stored.installed_at == NOW + timedelta(minutes=3)
            _, state = server_state(s, server_id or 0, NOW + timedelta(minutes=5))
            assert state.state is State.IN_USE
    finally:
        fake.stop()


def test_the_departure_checklist_closes_once_the_new_token_is_seen_in_use(
    engine: sa.Engine, vault: Vault
) -> None:
    cert = rsa_cert(0).certificate
    with db.unit_of_work(engine) as s:
        server = _server(s, vault)
        old = take_in(s, vault, ALICE, server, apple_token(cert), NOW, via="slack")
        server_id = server.id
    left = NOW + timedelta(days=10)
    with db.unit_of_work(engine) as s:
        case = record_departure(s, ALICE.user_id, left)
        assert case is not None and [i.token_id for i in case.items] == [old.token_id]
    renewed = left + timedelta(hours=1)
    with db.unit_of_work(engine) as s:
        take_in(s, vault, BOB, find_server(s, "School One"), apple_token(cert, at=renewed),
                renewed, via="slack")  # fmt: skip
        assert get_case(s, case.id).status == "open", "taken in, not yet seen in use"
        assert note_apple_use(s, renewed) == ()
        server = s.get(Server, server_id)
        assert server is not None
        server.apple_last_connected_at = renewed + timedelta(minutes=30)
        s.add(server)
        assert note_apple_use(s, renewed + timedelta(hours=1)) == (case.id,)
    with db.unit_of_work(engine) as s:
        done = get_case(s, case.id)
        assert done.status == "done" and all(i.done_at for i in done.items)


def test_expiry_alerts_watch_apple_tokens_as_any_other(engine: sa.Engine, vault: Vault) -> None:
    cert = rsa_cert(0).certificate
    with db.unit_of_work(engine) as s:
        server = _server(s, vault)
        taken = take_in(s, vault, ALICE, server, apple_token(cert), NOW, via="slack")
    soon = taken.expires_at - timedelta(days=29)
    with db.unit_of_work(engine) as s:
        due = claim_due_alerts(s, soon, (60, 30, 14))
    assert [(a.token_id, a.threshold, a.downloaded_by) for a in due] == [
        (taken.token_id, 30, ALICE.user_id)
    ]
    with db.unit_of_work(engine) as s:
        assert claim_due_alerts(s, soon, (60, 30, 14)) == [], "once"
        _, state = server_state(s, taken.server_id, soon) or (None, None)
        assert state is not None and state.state is State.EXPIRES_SOON and state.apple
