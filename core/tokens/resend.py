"""The token file again, for the person who downloaded it (lost or not yet uploaded)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from sqlmodel import Session

from core import audit
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.models import Certificate, Server, Token, TokenStatus
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.token_file import TokenCredentials, build_token_file, token_filename
from core.vault import Vault


@dataclass(frozen=True)
class TokenFile:
    """An active token's file, built again from its stored credentials."""

    token_id: int
    server_name: str
    filename: str
    content: bytes = field(repr=False)
    expires_at: datetime


def token_file_again(
    session: Session, vault: Vault, actor: Actor, token_id: int, now: datetime
) -> TokenFile:
    """The active, not yet installed token's file, for whoever downloaded it (audited)."""
    token = session.get(Token, token_id)
    server = session.get(Server, token.server_id) if token is not None else None
    if token is None or server is None or server.removed_at is not None:
        raise NotFound("That MDM server no longer exists.")
    if token.status != TokenStatus.ACTIVE:
        raise InvalidInput(f"This token for “{server.name}” was replaced; use the newest one.")
    if token.expires_at <= now:
        raise InvalidInput(f"The token for “{server.name}” has expired: renew it instead.")
    if token.installed_at is not None:
        raise InvalidInput(
            f"“{server.name}” already uses this token: there is nothing left to upload."
        )
    if not actor.operator and actor.user_id != token.downloaded_by:
        raise PermissionDenied(
            "Only the person who downloaded this token can get its file again; "
            "ask them, or renew the token."
        )
    authorize(session, actor, Permission.MANAGE_SERVERS)
    certificate = session.get(Certificate, token.certificate_id)
    if certificate is None:
        raise NotFound(f"The certificate of “{server.name}” is gone; renew the token.")
    secrets = json.loads(vault.decrypt(token.secrets))
    creds = TokenCredentials(
        consumer_key=token.consumer_key,
        consumer_secret=secrets["consumer_secret"],
        access_token=secrets["access_token"],
        access_secret=secrets["access_secret"],
        issued_at=token.issued_at,
        expires_at=token.expires_at,
    )
    cert = x509.load_pem_x509_certificate(certificate.pem.encode("ascii"))
    audit.record(session, actor, "token.resend", server.name, now, token=token_id)
    return TokenFile(
        token_id,
        server.name,
        token_filename(server.name, token.issued_at),
        build_token_file(creds, cert),
        token.expires_at,
    )
