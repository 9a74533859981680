"""Taking in a server token a person downloaded from Apple's portal.

Checked before anything changes (an S/MIME envelope for the server's certificate, not expired by
its name, not taken in before), kept encrypted, made the active token (the previous one is
superseded, as when mdmbot issues one), and queued for install when the server is connected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlmodel import Session, col, select

from core import audit
from core.apple import refusals
from core.apple.envelope import TokenEnvelope, is_for
from core.apple.refusals import TokenRefused
from core.connections.installs import request_install
from core.errors import InvalidInput
from core.models import Certificate, Server, Token, TokenStatus
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.certificates import LoadedCertificate
from core.tokens.issuance import activate_token, active_token_id, lock_server
from core.tokens.resend import APPLE, seal_apple_file
from core.tokens.servers import store_certificate
from core.tokens.token_file import add_one_year
from core.vault import Vault

DELIVERED = "apple:"  # a token's delivery target: taken in from Apple through this channel


@dataclass(frozen=True)
class TakenIn:
    """What taking a token in did."""

    token_id: int
    server_id: int
    server_name: str
    filename: str
    expires_at: datetime
    expiry_from: str  # "file name" or "time taken in" (until the MDM server answers)
    superseded: tuple[int, ...]
    install_id: int | None  # queued through the server's connection
    checked: bool  # the recipient was checked against the certificate mdmbot keeps


def latest_certificate(session: Session, server_id: int | None) -> Certificate | None:
    """The certificate mdmbot last uploaded or fetched for the server."""
    return session.exec(
        select(Certificate)
        .where(Certificate.server_id == server_id)
        .order_by(col(Certificate.uploaded_at).desc(), col(Certificate.id).desc())
    ).first()


def _loaded(cert: Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.pem.encode("ascii"))


def file_digest(envelope: TokenEnvelope) -> str:
    """The SHA-256 of the envelope's DER: the same file taken in twice is one token."""
    return hashlib.sha256(envelope.der).hexdigest()


def check(
    session: Session, server: Server, envelope: TokenEnvelope, now: datetime
) -> Certificate | None:
    """The certificate the token was checked against (None: mdmbot has none); TokenRefused
    when it is for another certificate or expired by its name, InvalidInput when already
    taken in."""
    cert = latest_certificate(session, server.id)
    if cert is not None and not is_for(envelope, _loaded(cert)):
        raise TokenRefused(
            f"“{envelope.filename}” is encrypted to another certificate, not the one mdmbot "
            f"keeps for “{server.name}” ({cert.subject}); nothing was changed. Download the "
            f"token of this server in {envelope.portal}, or drop the file for its own server."
        )
    expiry = envelope.named_expiry
    if expiry is not None and expiry <= now:
        raise TokenRefused(
            f"“{envelope.filename}” expired {expiry:%Y-%m-%d} (by its file name); nothing was "
            f"changed. Download a new token in {envelope.portal}."
        )
    seen = session.exec(
        select(Token.issued_at).where(
            Token.server_id == server.id,
            Token.access_digest == file_digest(envelope),
            Token.source == APPLE,
        )
    ).first()
    if seen is not None:
        raise InvalidInput(
            f"“{envelope.filename}” was already taken in for “{server.name}”; nothing was "
            "changed."
        )
    return cert


def note_refused(
    session: Session,
    actor: Actor,
    server_id: int,
    envelope: TokenEnvelope,
    refused: TokenRefused,
    now: datetime,
) -> bool:
    """Remember a refused file (shown on the Home); True when its one alert is due."""
    digest = file_digest(envelope)
    return refusals.note(session, actor, server_id, digest, refused.message, now)


def keep_certificate(
    session: Session, actor: Actor, server: Server, loaded: LoadedCertificate, now: datetime
) -> Certificate:
    """Keep a certificate uploaded or fetched for the server (Apple mode issues no token for
    it): the tokens taken in from then on must be encrypted to it."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    cert = store_certificate(session, server, loaded, actor, now)
    audit.record(
        session, actor, "certificate.keep", server.name, now, certificate=loaded.fingerprint_sha256
    )
    return cert


def matching_servers(session: Session, envelope: TokenEnvelope) -> list[Server]:
    """The live servers whose kept certificate the token is encrypted to (a dropped file)."""
    found = []
    for server in session.exec(
        select(Server).where(col(Server.removed_at).is_(None)).order_by(col(Server.name))
    ).all():
        cert = latest_certificate(session, server.id)
        if cert is not None and is_for(envelope, _loaded(cert)):
            found.append(server)
    return found


def take_in(
    session: Session,
    vault: Vault,
    actor: Actor,
    server: Server,
    envelope: TokenEnvelope,
    now: datetime,
    *,
    via: str,
) -> TakenIn:
    """Make the token the server's active one and queue its install when connected."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    assert server.id is not None
    server_id = server.id
    server = lock_server(session, server_id)
    cert = check(session, server, envelope, now)
    expiry_from = "file name" if envelope.named_expiry else "time taken in"
    token = Token(
        server_id=server_id,
        certificate_id=cert.id if cert is not None else None,
        consumer_key=server.consumer_key or "",
        access_digest=file_digest(envelope),
        secrets=seal_apple_file(vault, envelope.der, envelope.filename),
        issued_at=envelope.named_issue or now,
        expires_at=envelope.named_expiry or add_one_year(now).replace(microsecond=0),
        downloaded_by=actor.user_id,
        status=TokenStatus.PENDING,
        replaces_id=active_token_id(session, server_id),
        delivery_target=f"{DELIVERED}{via}",
        delivery_started_at=now,
        source=APPLE,
    )
    session.add(token)
    session.flush()
    assert token.id is not None
    activation = activate_token(session, actor, token.id, now)
    refusals.clear(server)
    session.add(server)
    install_id = request_install(session, token.id, actor.user_id, now)
    audit.record(
        session,
        actor,
        "token.import",
        server.name,
        now,
        token=token.id,
        file=envelope.filename,
        expires_at=token.expires_at,
        checked=cert is not None,
    )
    return TakenIn(
        token.id,
        server_id,
        server.name,
        envelope.filename,
        token.expires_at,
        expiry_from,
        activation.superseded,
        install_id,
        cert is not None,
    )

