"""Server use cases over a real database: add, edit, remove, tokens superseding each other."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.db import unit_of_work
from core.devices import unlink
from core.errors import (
    CertificateError,
    DuplicateName,
    InvalidInput,
    InvalidName,
    NotFound,
    PermissionDenied,
)
from core.models import AuditEvent, Certificate, Server, Token
from core.people.persons import grant_role
from core.roles import Actor, Role
from core.tokens import issuance, servers
from core.tokens.issuance import IssuedToken
from core.vault import Vault
from tests import certs
from tests.conftest import NOW
from tests.integration import OPERATOR, count, row_counts, rsa_cert, smime_decrypt, wide

LATER = NOW + timedelta(days=10)


def add(
    session: Session,
    vault: Vault,
    name: str,
    *,
    actor: Actor = OPERATOR,
    certificate: bytes | None = None,
    release_devices: bool = True,
    now: datetime = NOW,
) -> IssuedToken:
    """Add a server with a valid certificate (the token stays pending)."""
    return servers.add_server(
        session,
        vault,
        actor,
        name=name,
        certificate=rsa_cert().pem if certificate is None else certificate,
        release_devices=release_devices,
        now=now,
    )


def add_active(session: Session, vault: Vault, name: str, **kwargs: object) -> IssuedToken:
    """Add a server and activate its first token, as a delivered download does."""
    issued = add(session, vault, name, **kwargs)  # type: ignore[arg-type]
    issuance.activate_token(session, OPERATOR, issued.token_id, NOW)
    return issued


def token(session: Session, token_id: int) -> Token:
    """A token row, re-read from the database."""
    row = session.get(Token, token_id)
    assert row is not None
    session.refresh(row)
    return row


def test_add_server_cleans_the_display_name_and_allows_release_by_default(
    session: Session, vault: Vault
) -> None:
    add(session, vault, "  Jamf\u3000\u3000Pro ")
    add(session, vault, wide("MicroMDM"), release_devices=False)

    views = servers.list_servers(session)

    assert [(v.name, v.release_devices) for v in views] == [
        ("Jamf Pro", True),
        ("MicroMDM", False),
    ]
    assert servers.find_server(session, " jamf   PRO ").name == "Jamf Pro"
    assert views[0].created_by == "operator:alice"


DUPLICATES = ["Jamf", "jamf", "JAMF", "  jAmF  ", wide("JAMF"), wide("Jamf")]


def test_a_name_differing_only_in_case_spacing_or_width_is_a_duplicate(
    session: Session, vault: Vault
) -> None:
    add(session, vault, "Jamf")

    for variant in DUPLICATES:
        with pytest.raises(DuplicateName) as refused:
            add(session, vault, variant, certificate=rsa_cert(1).pem)
        assert "“Jamf”" in refused.value.message, variant

    assert count(session, Server) == 1
    assert count(session, Certificate) == 1
    assert count(session, Token) == 1


REFUSED_NAMES = [
    ("Unassigned", "reserves"),
    ("  REASSIGNED ", "reserves"),
    (wide("Unassigned"), "reserves"),
    ("", "Enter a server name"),
    ("   ", "Enter a server name"),
    ("x" * 65, "at most 64"),
    ("Jamf\nPro", "control characters"),
]


def test_names_apple_refuses_are_refused(session: Session, vault: Vault) -> None:
    for name, says in REFUSED_NAMES:
        with pytest.raises(InvalidName) as refused:
            add(session, vault, name)
        assert says in refused.value.message, name
    assert count(session, Server) == 0

    # Only the reserved words themselves are reserved, and 64 characters is allowed.
    assert add(session, vault, "un  assigned").server_name == "un assigned"
    assert add(session, vault, "x" * 64).server_name == "x" * 64


def test_an_operator_may_add_but_a_slack_user_needs_a_role(session: Session, vault: Vault) -> None:
    add(session, vault, "From the command line", actor=Actor("bob", operator=True))
    with pytest.raises(PermissionDenied) as refused:
        add(session, vault, "From Slack", actor=Actor("U0NOROLE"))
    assert "Site Manager" in refused.value.message

    for number, role in enumerate(Role):
        user = f"U0ROLE{number}"
        grant_role(session, OPERATOR, user, role, NOW)
        issued = add(session, vault, f"Server of {role.value}", actor=Actor(user))
        issuance.activate_token(session, Actor(user), issued.token_id, NOW)
        view = servers.get_server_view(session, f"server of {role.value}")
        assert (view.created_by, view.downloaded_by) == (user, user)

    assert [v.name for v in servers.list_servers(session)] == [
        "From the command line",
        "Server of Administrator",
        "Server of Device Enrollment Manager",
        "Server of Site Manager",
    ]


def test_a_refused_add_writes_nothing(engine: sa.Engine, vault: Vault) -> None:
    with unit_of_work(engine) as session:
        add_active(session, vault, "Jamf")
    before = row_counts(engine)
    assert before["server"] == before["certificate"] == before["token"] == 1
    good = rsa_cert(1).pem
    refusals: list[tuple[str, Actor, bytes]] = [
        ("unassigned", OPERATOR, good),
        ("JAMF", OPERATOR, good),
        (wide("jamf"), OPERATOR, good),
        ("Mosyle", OPERATOR, b"<html><body>Sign in to Slack</body></html>"),
        ("Mosyle", OPERATOR, certs.ec_cert().pem),
        ("Mosyle", Actor("U0NOROLE"), good),
    ]

    for name, actor, certificate in refusals:
        with pytest.raises((InvalidName, CertificateError, PermissionDenied)):
            with unit_of_work(engine) as session:
                add(session, vault, name, actor=actor, certificate=certificate)
        assert row_counts(engine) == before, (name, actor)

    with unit_of_work(engine) as session:
        assert [v.name for v in servers.list_servers(session)] == ["Jamf"]


def test_a_pending_token_is_listed_as_pending_until_activated(
    session: Session, vault: Vault
) -> None:
    issued = add(session, vault, "Jamf")

    [pending] = issuance.list_tokens(session)
    assert (pending.id, pending.status) == (issued.token_id, "pending")
    view = servers.get_server_view(session, "Jamf")
    assert (view.token_id, view.token_expires_at, view.state(NOW)) == (None, None, "no token")

    issuance.activate_token(session, OPERATOR, issued.token_id, NOW)

    [listed] = issuance.list_tokens(session)
    assert (listed.id, listed.status, listed.server_name) == (issued.token_id, "active", "Jamf")
    view = servers.get_server_view(session, "Jamf")
    assert view.token_id == issued.token_id
    assert view.token_expires_at == datetime(2027, 11, 27, 14, 3, 34, tzinfo=UTC)
    assert view.state(NOW) == "ok"
    assert view.days_left(NOW) == 365


def test_activating_a_new_token_supersedes_the_active_one(session: Session, vault: Vault) -> None:
    first = add_active(session, vault, "Jamf")
    server = servers.find_server(session, "Jamf")
    second = issuance.issue_token(session, vault, OPERATOR, server, LATER)

    # Until the new token is delivered the old one keeps working.
    assert token(session, first.token_id).status == "active"

    activation = issuance.activate_token(session, OPERATOR, second.token_id, LATER)

    assert activation.superseded == (first.token_id,)
    old, new = token(session, first.token_id), token(session, second.token_id)
    assert (old.status, old.superseded_at, old.reason) == ("superseded", LATER, "new token")
    assert (new.status, new.reason) == ("active", None)
    assert [(t.id, t.status) for t in issuance.list_tokens(session, server)] == [
        (second.token_id, "active"),
        (first.token_id, "superseded"),
    ]
    assert servers.get_server_view(session, "jamf").token_id == second.token_id
    with pytest.raises(InvalidInput, match="can no longer be activated"):
        issuance.activate_token(session, OPERATOR, first.token_id, LATER)


def test_replacing_the_certificate_retires_the_old_token_and_key(
    session: Session, vault: Vault, tmp_path: Path
) -> None:
    first = add_active(session, vault, "Jamf")
    new_cert = rsa_cert(2, subject="new.example.edu")

    issued = servers.replace_certificate(session, vault, OPERATOR, "JAMF", new_cert.pem, LATER)
    assert token(session, first.token_id).status == "active"  # still pending delivery
    issuance.activate_token(session, OPERATOR, issued.token_id, LATER)

    old = token(session, first.token_id)
    assert (old.status, old.superseded_at, old.reason) == (
        "superseded",
        LATER,
        "certificate replaced",
    )
    assert token(session, issued.token_id).status == "active"
    active = session.exec(select(Certificate).where(col(Certificate.active))).all()
    assert [c.subject for c in active] == ["CN=new.example.edu"]
    view = servers.get_server_view(session, "Jamf")
    assert view.certificate_subject == "CN=new.example.edu"
    assert view.token_id == issued.token_id
    # The new token opens with the new key only.
    assert b"BEGIN MESSAGE" in smime_decrypt(issued.content, new_cert.key_pem, tmp_path)
    # OpenSSL's CMS decryption goes on with a random content key when the given key opens no
    # recipient (its defence against the million message attack, `openssl cms -debug_decrypt`):
    # about 1 time in 256 that "decrypts" to garbage instead of failing, never to the token.
    try:
        opened = smime_decrypt(issued.content, rsa_cert().key_pem, tmp_path)
    except AssertionError:
        opened = b""
    assert b"BEGIN MESSAGE" not in opened


def test_a_discarded_pending_token_leaves_the_active_one_valid(
    session: Session, vault: Vault
) -> None:
    first = add_active(session, vault, "Jamf")
    pending = issuance.issue_token(
        session, vault, OPERATOR, servers.find_server(session, "Jamf"), LATER
    )

    issuance.discard_token(session, OPERATOR, pending.token_id, LATER, "not delivered")

    assert token(session, first.token_id).status == "active"
    assert token(session, pending.token_id).status == "revoked"
    assert [t.id for t in issuance.list_tokens(session)] == [pending.token_id, first.token_id]


def test_removing_a_server_revokes_its_tokens_and_frees_its_name(
    session: Session, vault: Vault
) -> None:
    first = add_active(session, vault, "Jamf")
    pending = issuance.issue_token(
        session, vault, OPERATOR, servers.find_server(session, "Jamf"), NOW
    )

    removed = unlink.remove_server(session, OPERATOR, "jamf", LATER)

    assert removed.removed_at == LATER
    for token_id in (first.token_id, pending.token_id):
        row = token(session, token_id)
        assert (row.status, row.superseded_at, row.reason) == ("revoked", LATER, "server removed")
    assert servers.list_servers(session) == []
    with pytest.raises(NotFound, match="no MDM server called “Jamf”"):
        servers.find_server(session, "Jamf")
    with pytest.raises(NotFound):
        unlink.remove_server(session, OPERATOR, "Jamf", LATER)
    assert not any(c.active for c in session.exec(select(Certificate)).all())

    again = add_active(session, vault, "JAMF", now=LATER)

    assert again.server_id != first.server_id
    assert [v.name for v in servers.list_servers(session)] == ["JAMF"]
    assert count(session, Server) == 2


def test_edit_renames_refuses_duplicates_and_toggles_release(
    session: Session, vault: Vault
) -> None:
    add_active(session, vault, "Jamf")
    add_active(session, vault, "Mosyle", certificate=rsa_cert(1).pem)

    renamed = servers.edit_server(session, OPERATOR, "jamf", now=LATER, rename="  Jamf   School ")
    assert renamed.name == "Jamf School"
    with pytest.raises(NotFound):
        servers.find_server(session, "Jamf")

    for clash in ("mosyle", wide("MOSYLE")):
        with pytest.raises(DuplicateName, match="Mosyle"):
            servers.edit_server(session, OPERATOR, "Jamf School", now=LATER, rename=clash)
    with pytest.raises(InvalidName, match="reserves"):
        servers.edit_server(session, OPERATOR, "Jamf School", now=LATER, rename="Reassigned")
    with pytest.raises(NotFound):
        servers.edit_server(session, OPERATOR, "Nope", now=LATER, release_devices=False)

    # Changing only the case of its own name is a rename, not a clash.
    assert (
        servers.edit_server(session, OPERATOR, "jamf school", now=LATER, rename="JAMF School").name
        == "JAMF School"
    )

    servers.edit_server(session, OPERATOR, "JAMF School", now=LATER, release_devices=False)
    assert servers.get_server_view(session, "jamf school").release_devices is False
    servers.edit_server(session, OPERATOR, "JAMF School", now=LATER, release_devices=True)
    assert servers.get_server_view(session, "jamf school").release_devices is True
    assert [v.name for v in servers.list_servers(session)] == ["JAMF School", "Mosyle"]

    with pytest.raises(PermissionDenied):
        servers.edit_server(session, Actor("U0NOROLE"), "Mosyle", now=LATER, rename="Hacked")
    assert servers.find_server(session, "Mosyle").name == "Mosyle"


def test_every_change_writes_an_audit_event(session: Session, vault: Vault) -> None:
    add_active(session, vault, "Jamf")
    server = servers.find_server(session, "Jamf")
    issued = issuance.issue_token(session, vault, OPERATOR, server, LATER)
    issuance.activate_token(session, OPERATOR, issued.token_id, LATER)
    issued = servers.replace_certificate(session, vault, OPERATOR, "Jamf", rsa_cert(1).pem, LATER)
    issuance.activate_token(session, OPERATOR, issued.token_id, LATER)
    servers.edit_server(session, OPERATOR, "Jamf", now=LATER, rename="Jamf Pro")
    servers.edit_server(session, OPERATOR, "Jamf Pro", now=LATER, release_devices=False)
    servers.edit_server(session, OPERATOR, "Jamf Pro", now=LATER, release_devices=False)  # no-op
    unlink.remove_server(session, OPERATOR, "Jamf Pro", LATER)

    events = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()

    assert [(e.action, e.subject) for e in events] == [
        ("server.add", "Jamf"),
        ("token.issue", "Jamf"),
        ("token.issue", "Jamf"),
        ("certificate.replace", "Jamf"),
        ("token.issue", "Jamf"),
        ("server.edit", "Jamf Pro"),
        ("server.edit", "Jamf Pro"),
        ("server.remove", "Jamf Pro"),
    ]
    assert {e.actor for e in events} == {"operator:alice"}
    assert json.loads(events[5].detail) == {"name": ["Jamf", "Jamf Pro"]}
    assert json.loads(events[6].detail) == {"release_devices": [True, False]}
    assert json.loads(events[7].detail) == {"revoked_tokens": 1}
    stored = " ".join(e.detail for e in events)
    for prefix in ("CK_", "CS_", "AT_", "AS_"):
        assert prefix not in stored


def test_times_come_back_timezone_aware_utc(engine: sa.Engine, vault: Vault) -> None:
    cet = NOW.astimezone(timezone(timedelta(hours=1)))
    with unit_of_work(engine) as session:
        first = add_active(session, vault, "Jamf", now=cet)
        second = issuance.issue_token(
            session, vault, OPERATOR, servers.find_server(session, "Jamf"), cet
        )
        issuance.activate_token(session, OPERATOR, second.token_id, LATER)

    with unit_of_work(engine) as session:
        server = session.exec(select(Server)).one()
        cert = session.exec(select(Certificate)).one()
        old, new = session.get(Token, first.token_id), session.get(Token, second.token_id)
        audit_times = session.exec(select(AuditEvent.at)).all()
        view = servers.get_server_view(session, "Jamf")
    assert old is not None and new is not None
    moments = [
        server.created_at,
        cert.uploaded_at,
        cert.not_after,
        old.issued_at,
        old.expires_at,
        old.superseded_at,
        new.issued_at,
        *audit_times,
        view.token_expires_at,
        view.created_at,
    ]
    for moment in moments:
        assert moment is not None and moment.utcoffset() == timedelta(0), moment
    assert server.created_at == NOW and server.created_at.hour == 14
    assert old.superseded_at == LATER
    assert new.expires_at == datetime(2027, 11, 27, 14, 3, 34, tzinfo=UTC)
    assert cert.not_after == rsa_cert().certificate.not_valid_after_utc
    assert view.state(NOW) == "ok"  # comparing with an aware clock does not raise


def test_certificates_are_parsed_before_the_transaction_opens(
    engine: sa.Engine, vault: Vault
) -> None:
    with unit_of_work(engine) as session:
        grant_role(session, OPERATOR, "U0SITE", Role.SITE_MANAGER, NOW)
        add_active(session, vault, "Jamf")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    hostile = (b"-----BEGIN CERTIFICATE-----\n" * 2340)[: 64 * 1024]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with pytest.raises(CertificateError), unit_of_work(engine) as session:
            add(session, vault, "Mosyle", actor=Actor("U0SITE"), certificate=hostile)
        with pytest.raises(CertificateError), unit_of_work(engine) as session:
            servers.replace_certificate(session, vault, Actor("U0SITE"), "Jamf", hostile, NOW)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    # Nothing reached the database: no write lock was held while the upload was parsed.
    assert statements == []
