"""Use cases over server tokens: prepare, activate, discard, replace the certificate, list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlmodel import Session, col, select

from core import audit
from core.errors import InvalidInput, NotFound
from core.models import Certificate, RotationCase, RotationItem, Server, Token, TokenStatus
from core.people import authorize
from core.roles import Actor, Permission
from core.tokens import build_token_file, generate_credentials, token_filename
from core.vault import Vault


@dataclass(frozen=True)
class IssuedToken:
    """A freshly prepared token file, pending until delivered and activated."""

    token_id: int
    server_id: int
    server_name: str
    filename: str
    content: bytes
    issued_at: datetime
    expires_at: datetime
    warnings: tuple[str, ...] = ()
    replaces_active: bool = False

    def __repr__(self) -> str:
        return f"IssuedToken(token_id={self.token_id}, server_name={self.server_name!r})"


@dataclass(frozen=True)
class Activation:
    """What activating a token changed."""

    superseded: tuple[int, ...]
    ticked_items: tuple[int, ...]
    closed_cases: tuple[int, ...]


@dataclass(frozen=True)
class TokenView:
    """What a user sees of one token (never its credentials)."""

    id: int
    server_name: str
    status: str
    issued_at: datetime
    expires_at: datetime
    downloaded_by: str
    certificate_fingerprint: str
    reason: str | None
    installed_at: datetime | None = None
    installed_from: str | None = None
    installed_user_agent: str | None = None
    last_used_at: datetime | None = None
    last_used_from: str | None = None
    rejected_attempts: int = 0
    last_rejected_at: datetime | None = None


def prepare_token(
    session: Session,
    vault: Vault,
    actor: Actor,
    server: Server,
    certificate: Certificate,
    now: datetime,
    *,
    warnings: tuple[str, ...] = (),
) -> IssuedToken:
    """Create a pending token for `server` encrypted to `certificate`."""
    assert server.id is not None and certificate.id is not None
    creds = generate_credentials(now)
    secrets = {
        "consumer_secret": creds.consumer_secret,
        "access_token": creds.access_token,
        "access_secret": creds.access_secret,
    }
    token = Token(
        server_id=server.id,
        certificate_id=certificate.id,
        consumer_key=creds.consumer_key,
        secrets=vault.encrypt(json.dumps(secrets)),
        issued_at=creds.issued_at,
        expires_at=creds.expires_at,
        downloaded_by=actor.user_id,
        status=TokenStatus.PENDING,
    )
    session.add(token)
    session.flush()
    assert token.id is not None
    cert = x509.load_pem_x509_certificate(certificate.pem.encode("ascii"))
    return IssuedToken(
        token_id=token.id,
        server_id=server.id,
        server_name=server.name,
        filename=token_filename(server.name, creds.issued_at),
        content=build_token_file(creds, cert),
        issued_at=creds.issued_at,
        expires_at=creds.expires_at,
        warnings=warnings,
        replaces_active=session.exec(
            select(Token.id).where(Token.server_id == server.id, Token.status == "active")
        ).first()
        is not None,
    )


def issue_token(
    session: Session, vault: Vault, actor: Actor, server: Server, now: datetime
) -> IssuedToken:
    """Prepare a new token for a server with its current certificate."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    cert = session.exec(
        select(Certificate)
        .where(Certificate.server_id == server.id)
        .order_by(col(Certificate.active).desc(), col(Certificate.uploaded_at).desc())
    ).first()
    if cert is None:
        raise NotFound(f"“{server.name}” has no public key certificate; upload one first.")
    return prepare_token(session, vault, actor, server, cert, now)


def activate_token(session: Session, actor: Actor, token_id: int, now: datetime) -> Activation:
    """Make a delivered token the active one: the previous token stops working at once."""
    token = session.get(Token, token_id)
    if token is None or token.status != TokenStatus.PENDING:
        raise InvalidInput("This token can no longer be activated; request a new one.")
    previous = session.exec(
        select(Token).where(Token.server_id == token.server_id, Token.status == "active")
    ).all()
    for old in previous:
        old.status, old.superseded_at, old.next_alert_at = TokenStatus.SUPERSEDED, now, None
        old.reason = (
            "certificate replaced" if old.certificate_id != token.certificate_id else "new token"
        )
        session.add(old)
    token.status, token.reason = TokenStatus.ACTIVE, None
    session.add(token)
    for cert in session.exec(select(Certificate).where(Certificate.server_id == token.server_id)):
        cert.active = cert.id == token.certificate_id
        session.add(cert)
    server = session.get(Server, token.server_id)
    assert server is not None
    # The rotation items of the replaced tokens are done once this one is installed
    # (core.dep_feedback.record_use), not now: until then the MDM server still has the old one.
    audit.record(
        session,
        actor,
        "token.issue",
        server.name,
        now,
        token=token_id,
        expires_at=token.expires_at,
        superseded=[o.id for o in previous],
    )
    return Activation(tuple(o.id for o in previous if o.id), (), ())


def discard_token(session: Session, actor: Actor, token_id: int, now: datetime, why: str) -> None:
    """Abandon a pending token that never reached its user; the active one stays valid."""
    token = session.get(Token, token_id)
    if token is None or token.status != TokenStatus.PENDING:
        return
    token.status, token.superseded_at, token.reason = TokenStatus.REVOKED, now, why
    session.add(token)
    audit.record(session, actor, "token.discard", str(token_id), now, reason=why)


def list_tokens(session: Session, server: Server | None = None) -> list[TokenView]:
    """Tokens (all servers or one), newest first, without credentials."""
    query = (
        select(Token, Server, Certificate)
        .join(Server, col(Server.id) == col(Token.server_id))
        .join(Certificate, col(Certificate.id) == col(Token.certificate_id))
        .where(col(Token.status) != TokenStatus.PENDING)
        .order_by(col(Token.issued_at).desc(), col(Token.id).desc())
    )
    if server is not None:
        query = query.where(Token.server_id == server.id)
    return [
        TokenView(
            t.id or 0,
            s.name,
            t.status,
            t.issued_at,
            t.expires_at,
            t.downloaded_by,
            c.fingerprint_sha256,
            t.reason,
            t.installed_at,
            t.installed_from,
            t.installed_user_agent,
            t.last_used_at,
            t.last_used_from,
            t.rejected_attempts,
            t.last_rejected_at,
        )
        for t, s, c in session.exec(query).all()
    ]


def tick_rotations(
    session: Session, actor: Actor, token_ids: list[int], now: datetime
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Mark the open checklist items of replaced tokens done; close cases with nothing left."""
    if not token_ids:
        return (), ()
    items = session.exec(
        select(RotationItem)
        .join(RotationCase, col(RotationCase.id) == col(RotationItem.case_id))
        .where(
            col(RotationItem.token_id).in_(token_ids),
            col(RotationItem.done_at).is_(None),
            RotationCase.status == "open",
        )
    ).all()
    for item in items:
        item.done_by, item.done_at = actor.user_id, now
        session.add(item)
    session.flush()
    closed = []
    for case_id in {i.case_id for i in items}:
        open_left = session.exec(
            select(RotationItem.id).where(
                RotationItem.case_id == case_id, col(RotationItem.done_at).is_(None)
            )
        ).first()
        if open_left is None:
            case = session.get(RotationCase, case_id)
            assert case is not None
            case.status, case.closed_at = "done", now
            session.add(case)
            closed.append(case_id)
    return tuple(i.id for i in items if i.id), tuple(closed)
