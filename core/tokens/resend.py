"""The token file again, for the person who downloaded it (lost or not yet uploaded)."""

from __future__ import annotations

import base64
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
from core.tokens.token_file import (
    TokenCredentials,
    build_token_file,
    token_filename,
    wrap_der,
)
from core.vault import Vault

APPLE = "apple"  # Token.source of a token a person downloaded from Apple and dropped in


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
    filename, content = file_of(session, vault, token, server.name)
    audit.record(session, actor, "token.resend", server.name, now, token=token_id)
    return TokenFile(token_id, server.name, filename, content, token.expires_at)


def seal_apple_file(vault: Vault, der: bytes, filename: str) -> str:
    """What an Apple token keeps in its encrypted `secrets`: its envelope (never opened)."""
    return vault.encrypt(json.dumps({"der": base64.b64encode(der).decode(), "filename": filename}))


def file_of(session: Session, vault: Vault, token: Token, server_name: str) -> tuple[str, bytes]:
    """A token's file name and file: Apple's as it was taken in, mdmbot's built again from its
    stored credentials for its certificate."""
    secrets = json.loads(vault.decrypt(token.secrets))
    if token.source == APPLE:
        return str(secrets["filename"]), wrap_der(base64.b64decode(secrets["der"]))
    certificate = session.get(Certificate, token.certificate_id)
    if certificate is None:
        raise NotFound(f"The certificate of “{server_name}” is gone; renew the token.")
    creds = TokenCredentials(
        consumer_key=token.consumer_key,
        consumer_secret=secrets["consumer_secret"],
        access_token=secrets["access_token"],
        access_secret=secrets["access_secret"],
        issued_at=token.issued_at,
        expires_at=token.expires_at,
    )
    cert = x509.load_pem_x509_certificate(certificate.pem.encode("ascii"))
    return token_filename(server_name, token.issued_at), build_token_file(creds, cert)
