"""Use cases over server tokens: prepare, activate, discard, replace the certificate, list."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from cryptography import x509
from sqlmodel import Session, col, select

from core import audit
from core.errors import InvalidInput, NotFound, TokenConflict
from core.models import Certificate, Server, Token, TokenStatus
from core.people import alerts
from core.people.persons import authorize
from core.people.rotation import mark_cases_stale, open_cases_of
from core.roles import Actor, Permission
from core.tokens.certificates import LoadedCertificate
from core.tokens.token_file import build_token_file, generate_credentials, token_filename
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
    replaces_id: int | None = None
    certificate_not_after: datetime | None = None  # the date the warnings speak of

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


DELIVERY_GRACE = timedelta(minutes=5)  # a delivery older than this was cut short


class Current:
    """The `expected` default: whatever token is active when the new one is prepared."""


CURRENT = Current()


def prepare_token(
    session: Session,
    vault: Vault,
    actor: Actor,
    server: Server,
    certificate: Certificate,
    now: datetime,
    *,
    loaded: LoadedCertificate | None = None,
    expected: int | Current | None = CURRENT,
    new_consumer_key: bool = False,
) -> IssuedToken:
    """Create a pending token for `server`, refused unless `expected` is still the active token.

    The server's consumer key is kept (Apple keeps it across renewals; NanoDEP refuses a changed
    one) unless `new_consumer_key` asks for a new one.
    """
    # `expected`: the active token the requester confirmed replacing (None: none), compare-and-swap.
    assert server.id is not None and certificate.id is not None
    active = active_token_id(session, server.id)
    if not isinstance(expected, Current) and expected != active:
        raise TokenConflict(replaced_message(server.name))
    creds = generate_credentials(now, None if new_consumer_key else server.consumer_key)
    if server.consumer_key is None:
        server.consumer_key = creds.consumer_key  # the server's key from its first token on
        session.add(server)
    secrets = {
        "consumer_secret": creds.consumer_secret,
        "access_token": creds.access_token,
        "access_secret": creds.access_secret,
    }
    token = Token(
        server_id=server.id,
        certificate_id=certificate.id,
        consumer_key=creds.consumer_key,
        access_digest=access_digest(creds.access_token),
        secrets=vault.encrypt(json.dumps(secrets)),
        issued_at=creds.issued_at,
        expires_at=creds.expires_at,
        downloaded_by=actor.user_id,
        status=TokenStatus.PENDING,
        replaces_id=active,
    )
    session.add(token)
    session.flush()
    assert token.id is not None
    cert = (
        loaded.certificate
        if loaded is not None
        else x509.load_pem_x509_certificate(certificate.pem.encode("ascii"))
    )
    return IssuedToken(
        token_id=token.id,
        server_id=server.id,
        server_name=server.name,
        filename=token_filename(server.name, creds.issued_at),
        content=build_token_file(creds, cert),
        issued_at=creds.issued_at,
        expires_at=creds.expires_at,
        warnings=loaded.warnings if loaded is not None else (),
        replaces_active=active is not None,
        replaces_id=active,
        certificate_not_after=loaded.not_after if loaded is not None else None,
    )


def access_digest(access_token: str) -> str:
    """The SHA-256 of an access token, to find its token without decrypting every candidate."""
    return hashlib.sha256(access_token.encode("ascii")).hexdigest()


def replaced_message(server_name: str) -> str:
    """What the loser of a concurrent rotation is told."""
    return (
        f"Someone else just replaced the token for “{server_name}”, so yours was not issued "
        "and nothing was sent. Their new token is the active one; request another only if you "
        "still need to."
    )


def active_token_id(session: Session, server_id: int) -> int | None:
    """The id of the server's active token, if any."""
    return session.exec(
        select(Token.id).where(Token.server_id == server_id, Token.status == TokenStatus.ACTIVE)
    ).first()


def lock_server(session: Session, server_id: int) -> Server:
    """Lock the server row until the transaction ends (PostgreSQL; SQLite writers take turns)."""
    # FOR NO KEY UPDATE: it does not wait for the key-share lock a new token's foreign key holds.
    server = session.exec(
        select(Server).where(Server.id == server_id).with_for_update(key_share=True)
    ).one()
    session.refresh(server)
    return server


def issue_token(
    session: Session,
    vault: Vault,
    actor: Actor,
    server: Server,
    now: datetime,
    *,
    expected: int | Current | None = CURRENT,
    new_consumer_key: bool = False,
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
    return prepare_token(
        session, vault, actor, server, cert, now,
        expected=expected, new_consumer_key=new_consumer_key,
    )


def start_delivery(
    session: Session, actor: Actor, token_id: int, target: str, now: datetime
) -> str | None:
    """Mark a pending token as being delivered to `target`; else discard it and say why."""
    # Refused when another token became active or started delivery since this one was prepared.
    token = session.get(Token, token_id)
    if token is None or token.status != TokenStatus.PENDING:
        return "This token can no longer be delivered; request a new one."
    server = lock_server(session, token.server_id)
    session.refresh(token)
    if token.status != TokenStatus.PENDING:
        return "This token can no longer be delivered; request a new one."
    busy = session.exec(
        select(Token.delivery_started_at).where(
            Token.server_id == token.server_id, Token.status == TokenStatus.DELIVERING
        )
    ).first()
    if busy is not None and busy <= now - DELIVERY_GRACE:
        discard_token(session, actor, token_id, now, "an earlier delivery is unsettled")
        return (
            f"An earlier new token for “{server.name}” was cut off while being delivered; "
            "mdmbot settles it within minutes. Nothing was changed; try again shortly."
        )
    if busy is None and active_token_id(session, token.server_id) == token.replaces_id:
        token.status, token.delivery_target, token.delivery_started_at = (
            TokenStatus.DELIVERING,
            target,
            now,
        )
        try:
            with session.begin_nested():
                session.add(token)
        except sa.exc.IntegrityError:
            session.refresh(token)
        else:
            return None
    discard_token(session, actor, token_id, now, "someone else replaced the token first")
    return replaced_message(server.name)


def activate_token(session: Session, actor: Actor, token_id: int, now: datetime) -> Activation:
    """Make a delivered token the active one: the previous token stops working at once."""
    token = session.get(Token, token_id)
    if token is None or token.status not in (TokenStatus.PENDING, TokenStatus.DELIVERING):
        raise InvalidInput("This token can no longer be activated; request a new one.")
    server = lock_server(session, token.server_id)
    session.refresh(token)
    previous = session.exec(
        select(Token).where(Token.server_id == token.server_id, Token.status == "active")
    ).all()
    if token.status not in (TokenStatus.PENDING, TokenStatus.DELIVERING) or [
        o.id for o in previous
    ] != ([token.replaces_id] if token.replaces_id is not None else []):
        raise TokenConflict(replaced_message(server.name))
    for old in previous:
        old.status, old.superseded_at, old.next_alert_at = TokenStatus.SUPERSEDED, now, None
        old.reason = (
            "certificate replaced" if old.certificate_id != token.certificate_id else "new token"
        )
        session.add(old)
    token.status, token.reason = TokenStatus.ACTIVE, None
    session.add(token)
    server.consumer_key = token.consumer_key
    session.add(server)
    for cert in session.exec(select(Certificate).where(Certificate.server_id == token.server_id)):
        cert.active = cert.id == token.certificate_id
        session.add(cert)
    replaced = [o.id for o in previous if o.id]
    alerts.mark_replaced(session, replaced, actor.label, now)
    # The rotation items of the replaced tokens are done once this one is installed
    # (core.dep.feedback.record_use), not now: until then the MDM server still has the old one,
    # so their checklists only change to "waiting for the MDM server".
    mark_cases_stale(session, open_cases_of(session, replaced), now)
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
    """Abandon a token that never reached its user; the active one stays valid."""
    token = session.get(Token, token_id)
    if token is None or token.status not in (TokenStatus.PENDING, TokenStatus.DELIVERING):
        return
    token.status, token.superseded_at, token.reason = TokenStatus.REVOKED, now, why
    session.add(token)
    audit.record(session, actor, "token.discard", str(token_id), now, reason=why)


@dataclass(frozen=True)
class StuckDelivery:
    """A token prepared or being delivered long enough ago that its process must have stopped."""

    token_id: int
    server_name: str
    user_id: str
    status: str
    target: str | None
    filename: str
    issued_at: datetime


def stuck_deliveries(
    session: Session, now: datetime, grace: timedelta = DELIVERY_GRACE
) -> list[StuckDelivery]:
    """Tokens still pending or being delivered `grace` after they were prepared."""
    rows = session.exec(
        select(Token, Server.name)
        .join(Server, col(Server.id) == col(Token.server_id))
        .where(
            col(Token.status).in_([TokenStatus.PENDING, TokenStatus.DELIVERING]),
            col(Token.issued_at) <= now - grace,
        )
        .order_by(col(Token.id))
    ).all()
    return [
        StuckDelivery(
            t.id or 0,
            name,
            t.downloaded_by,
            t.status,
            t.delivery_target,
            token_filename(name, t.issued_at),
            t.issued_at,
        )
        for t, name in rows
    ]


def list_tokens(session: Session, server: Server | None = None) -> list[TokenView]:
    """Tokens (all servers or one), newest first, without credentials."""
    query = (
        select(Token, Server, Certificate)
        .join(Server, col(Server.id) == col(Token.server_id))
        .outerjoin(Certificate, col(Certificate.id) == col(Token.certificate_id))
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
            c.fingerprint_sha256 if c is not None else "",
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
