"""Core of the DEP authentication: header parsing, nonces and sessions over a real database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import db
from core.dep import auth as dep_auth
from core.dep import routine
from core.dep.auth import DepError
from core.models import DepNonce, DepSession, Token, TokenStatus
from core.vault import Vault
from tests.conftest import NOW
from tests.dep_client import add_server, oauth_header

URL = "http://dep.school.example/session"


def test_realm_is_optional_and_never_signed(session: Session, vault: Vault) -> None:
    creds = add_server(session, vault, "Jamf", NOW, actor="operator")
    stamp = str(int(NOW.timestamp()))
    for realm in (None, "ADM"):
        header = oauth_header(creds, URL, realm=realm, timestamp=stamp, nonce=f"n{realm}")
        request = dep_auth.parse_oauth(header, "GET", [URL])
        assert "realm" not in dict(request.params)
        assert dep_auth.signature_valid(request, creds.consumer_secret, creds.access_secret)
        assert not dep_auth.signature_valid(request, creds.consumer_secret, "AS_other")
    lower = oauth_header(creds, URL, timestamp=stamp).replace("OAuth ", "oauth ", 1)
    assert dep_auth.parse_oauth(lower, "GET", [URL]).consumer_key == creds.consumer_key


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Basic dXNlcjpwYXNz", "OAUTH_HEADER_MALFORMED"),
        ('OAuth oauth_consumer_key="a", oauth_consumer_key="b"', "OAUTH_PARAMETER_DUPLICATED"),
        ('OAuth oauth_consumer_key="a"', "OAUTH_PARAMETER_MISSING"),
    ],
)
def test_malformed_headers_are_400(header: str, code: str) -> None:
    with pytest.raises(DepError) as refused:
        dep_auth.parse_oauth(header, "GET", [URL])
    assert (refused.value.status, refused.value.code) == (400, code)


def test_sweep_prunes_old_nonces_and_dead_sessions(session: Session, vault: Vault) -> None:
    creds = add_server(session, vault, "Fleet", NOW, actor="operator")
    for minutes in (0, 11):
        header = oauth_header(
            creds, URL, timestamp=str(int((NOW - timedelta(minutes=minutes)).timestamp()))
        )
        request = dep_auth.parse_oauth(header, "GET", [URL])
        at = NOW - timedelta(minutes=minutes)
        opened = dep_auth.open_session(
            session,
            dep_auth.verify_request(session.connection(), vault, request, at).token_id,
            request,
            at,
            client="10.0.0.9",
            user_agent="fleetdm/nanodep",
        )
        assert opened.session_key and opened.error is None
    dep_auth.prune(session.connection(), NOW)
    assert len(session.exec(select(DepNonce)).all()) == 1
    assert len(session.exec(select(DepSession)).all()) == 1


def test_opening_a_session_prunes_a_bounded_batch_without_a_sweep(
    session: Session, vault: Vault
) -> None:
    creds = add_server(session, vault, "Mosyle", NOW, actor="operator")
    old, token_id = NOW - timedelta(hours=2), creds.token_id
    batch = dep_auth.PRUNE_BATCH * dep_auth.PRUNE_EVERY  # one /session in 8 prunes 8 batches
    extra = batch + 20
    for i in range(extra):
        session.add(DepNonce(consumer_key="CK_x", timestamp=i, nonce=f"n{i}", seen_at=old))
        dead = DepSession(key_hash=f"{i:064d}", token_id=token_id, created_at=old, expires_at=old)
        session.add(dead)
    session.flush()

    def open_one(nonce: str) -> None:
        header = oauth_header(creds, URL, timestamp=str(int(NOW.timestamp())), nonce=nonce)
        request = dep_auth.parse_oauth(header, "GET", [URL])
        token = dep_auth.verify_request(session.connection(), vault, request, NOW).token_id
        opened = dep_auth.open_session(session, token, request, NOW, client="", user_agent="ua")
        assert opened.session_key is not None

    every = dep_auth.PRUNE_EVERY
    for i in range(every):
        open_one(f"first{i}")
    assert len(session.exec(select(DepNonce)).all()) == extra - batch + every
    assert len(session.exec(select(DepSession)).all()) == extra - batch + every
    for i in range(every):
        open_one(f"second{i}")
    assert len(session.exec(select(DepNonce)).all()) == 2 * every, "only this window's nonces"
    assert len(session.exec(select(DepSession)).all()) == 2 * every, "live sessions stay"


def _safety(connection: sa.Connection) -> str:
    if connection.dialect.name == "sqlite":
        return {1: "NORMAL", 2: "FULL"}[connection.exec_driver_sql("PRAGMA synchronous").scalar()]
    return str(connection.exec_driver_sql("SHOW synchronous_commit").scalar())


def test_only_units_of_work_marked_not_durable_commit_without_waiting_for_the_disk(
    engine: sa.Engine,
) -> None:
    expected = {"sqlite": ("FULL", "NORMAL"), "postgresql": ("on", "off")}[engine.dialect.name]
    for _ in range(2):  # pooled connections switch back and forth
        with db.unit_of_work(engine) as session:
            assert _safety(session.connection()) == expected[0]
        with db.unit_of_work(engine, durable=False) as session:
            assert _safety(session.connection()) == expected[1]
            session.add(DepNonce(consumer_key="CK", timestamp=1, nonce=f"n{_}", seen_at=NOW))
    with db.unit_of_work(engine, readonly=True) as session:
        assert len(session.exec(select(DepNonce)).all()) == 2  # the relaxed ones committed


def test_a_signer_seen_before_is_checked_without_the_database(
    session: Session, vault: Vault
) -> None:
    creds = add_server(session, vault, "Kandji", NOW, actor="operator")
    signers = dep_auth.Signers()
    stamp = str(int(NOW.timestamp()))

    def request(nonce: str, secret: str = creds.access_secret) -> dep_auth.OAuthRequest:
        signed = dataclasses.replace(creds, access_secret=secret)
        return dep_auth.parse_oauth(
            oauth_header(signed, URL, timestamp=stamp, nonce=nonce), "GET", [URL]
        )

    assert dep_auth.verify_known(signers, request("a"), NOW) is None, "unknown until verified"
    with pytest.raises(DepError) as forged:
        forgery = request("b", "AS_forged")
        dep_auth.verify_request(session.connection(), vault, forgery, NOW, signers)
    assert forged.value.code == "SIGNATURE_INVALID"
    # The access token identified the token, so the next request needs no read to be checked.
    known = dep_auth.verify_known(signers, request("c"), NOW)
    assert known is not None and known.token_id == creds.token_id
    for refused, at, code in (
        (request("d", "AS_forged"), NOW, "SIGNATURE_INVALID"),
        (request("e"), NOW + dep_auth.WINDOW + timedelta(seconds=1), "TIMESTAMP_REFUSED"),
    ):
        with pytest.raises(DepError) as failed:
            dep_auth.verify_known(signers, refused, at)
        assert failed.value.code == code
    other = add_server(session, vault, "Jamf", NOW, actor="operator")
    header = oauth_header(other, URL, timestamp=stamp)
    assert dep_auth.verify_known(signers, dep_auth.parse_oauth(header, "GET", [URL]), NOW) is None


def test_a_routine_session_opens_in_one_statement_on_postgresql(
    engine: sa.Engine, vault: Vault
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite opens it in a transaction of its own (the tests above)")
    with db.unit_of_work(engine) as session:
        creds = add_server(session, vault, "Jamf Pro", NOW, actor="operator")
    stamp = str(int(NOW.timestamp()))

    def request(nonce: str) -> dep_auth.OAuthRequest:
        header = oauth_header(creds, URL, timestamp=stamp, nonce=nonce)
        return dep_auth.parse_oauth(header, "GET", [URL])

    def counts() -> tuple[int, int]:
        with db.unit_of_work(engine, readonly=True) as session:
            return len(session.exec(select(DepNonce)).all()), len(
                session.exec(select(DepSession)).all()
            )

    def alone(nonce: str, at: datetime, client: str) -> dep_auth.SessionOutcome | None:
        with db.statements_alone(engine) as connection:
            outcome = dep_auth.open_routine_session(
                connection, creds.token_id, request(nonce), at, client=client
            )
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        return outcome

    assert alone("a", NOW, "10.0.0.1") is None, "a token never used needs open_session"
    assert counts() == (0, 0), "and nothing was written"
    with db.unit_of_work(engine) as session:
        first = dep_auth.open_session(
            session, creds.token_id, request("b"), NOW, client="10.0.0.1", user_agent="ua"
        )
    assert first.installed and counts() == (1, 1)

    later = NOW + timedelta(minutes=1)
    opened = alone("c", later, "10.0.0.2")
    assert opened is not None and opened.session_key and opened.error is None
    assert counts() == (2, 2)
    with db.transaction(engine, readonly=True) as connection:
        live = dep_auth.check_session(connection, opened.session_key, later)
        token = connection.execute(
            sa.select(Token.last_used_at, Token.last_used_from).where(
                Token.id == creds.token_id  # type: ignore[arg-type]
            )
        ).one()
    assert live.token_id == creds.token_id and not live.stale
    assert token == (later, "10.0.0.2"), "`last seen` written with the session"

    replayed = alone("c", later, "10.0.0.3")
    assert replayed is not None and replayed.error is not None
    assert replayed.error.code == "NONCE_USED" and counts() == (2, 2)
    with db.unit_of_work(engine) as session:
        session.get_one(Token, creds.token_id).status = TokenStatus.SUPERSEDED
    assert alone("d", later, "10.0.0.4") is None, "a superseded token is refused by open_session"
    assert counts() == (2, 2)


def _token_state(engine: sa.Engine, vault: Vault, name: str) -> tuple[int, dict[str, int]]:
    """A new server's token id, and the parameters of `dep_auth._STATE` that read it."""
    with db.unit_of_work(engine) as session:
        creds = add_server(session, vault, name, NOW, actor="operator")
    return creds.token_id, {"id": creds.token_id}


def test_statements_run_on_the_driver_read_and_write_what_sqlalchemy_would(
    engine: sa.Engine, vault: Vault
) -> None:
    token_id, token = _token_state(engine, vault, "Mosyle")
    state = dep_auth._STATE
    with db.transaction(engine) as connection:
        assert routine.rows(connection, state, token) == connection.execute(state, token).all()
        row = routine.first(connection, state, token)
        assert row is not None and row[1] == NOW + timedelta(days=365) and row[1].tzinfo == UTC
        assert row[2] is None, "never installed"
        assert routine.first(connection, state, {"id": token_id + 99}) is None
        nonce = {"key": "CK_1", "ts": 7, "nonce": "n1", "at": NOW}
        sqlite = connection.dialect.name == "sqlite"
        assert routine.first(connection, dep_auth._NONCE[sqlite], nonce) is not None
        assert routine.first(connection, dep_auth._NONCE[sqlite], nonce) is None, "used before"
    with db.transaction(engine, readonly=True) as connection:
        stored = connection.execute(
            sa.select(DepNonce.consumer_key, DepNonce.nonce, DepNonce.seen_at)
        ).one()
    assert stored == ("CK_1", "n1", NOW)


def test_a_statement_alone_reads_what_is_committed_and_holds_no_lock(
    engine: sa.Engine, vault: Vault
) -> None:
    token_id, token = _token_state(engine, vault, "Jamf School")
    with db.statements_alone(engine) as alone:

        def last_used() -> object:
            row = routine.first(alone, dep_auth._STATE, token)
            assert row is not None
            return row[3]

        assert last_used() is None, "never used"
        with db.transaction(engine) as writer:  # would wait (busy) behind a held lock
            writer.execute(
                sa.update(Token).where(Token.id == token_id).values(last_used_at=NOW)  # type: ignore[arg-type]
            )
        assert last_used() == NOW, "each statement sees the last commit"
        assert alone.execute(sa.select(sa.func.count()).select_from(Token)).scalar() == 1
        with db.transaction(engine) as writer:  # a Core statement began no write either
            writer.execute(sa.delete(DepNonce))
            later = sa.update(Token).values(last_used_at=NOW + timedelta(hours=1))
            writer.execute(later.where(Token.id == token_id))  # type: ignore[arg-type]
        seen = sa.select(Token.last_used_at).where(Token.id == token_id)  # type: ignore[arg-type]
        assert alone.execute(seen).scalar() == NOW + timedelta(hours=1), "nor a snapshot"


def test_a_statement_with_an_in_list_runs_through_sqlalchemy(
    engine: sa.Engine, vault: Vault
) -> None:
    token_id, _ = _token_state(engine, vault, "Kandji")
    listed = sa.select(Token.id).where(col(Token.id).in_(sa.bindparam("ids", expanding=True)))
    with db.transaction(engine, readonly=True) as connection:
        assert [tuple(r) for r in routine.rows(connection, listed, {"ids": [token_id, 99]})] == [
            (token_id,)
        ]
