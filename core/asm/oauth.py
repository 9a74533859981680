"""The token endpoint's rules (ASM-API.md §2): an ES256 client assertion for an access token."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlmodel import Session, col, select

from core.asm.accounts import SCOPES
from core.asm.models import ApiAccessToken, ApiAccount

APPLE_AUDIENCE = "https://account.apple.com/auth/oauth2/v2/token"
GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = timedelta(hours=1)
MAX_ASSERTION_LIFETIME = timedelta(days=180)


class TokenRefused(Exception):
    """Apple answers every refusal with 400 `invalid_client`; `reason` says which rule failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedAccess:
    """An access token for the client, with what it is for."""

    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True)
class Caller:
    """The live account an access token belongs to."""

    account_id: int
    client_id: str
    scope: str  # `school` or `business`


def digest(token: str) -> str:
    """The SHA-256 under which an access token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _claims(assertion: str, account: ApiAccount, audiences: list[str]) -> dict[str, object]:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise TokenRefused("the client assertion is not a JWT") from exc
    if header.get("alg") != "ES256":
        raise TokenRefused("the client assertion must be signed with ES256")
    if header.get("kid") != account.key_id:
        raise TokenRefused("the assertion's kid is not this account's key id")
    key = load_pem_public_key(account.public_key.encode())
    try:
        # Times are checked below against the caller's clock (tests pass a fixed one).
        claims: dict[str, object] = jwt.decode(
            assertion,
            key,  # type: ignore[arg-type]
            algorithms=["ES256"],
            audience=audiences,
            options={"require": ["sub", "aud", "iat", "exp"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False},
        )  # fmt: skip
    except jwt.InvalidAudienceError as exc:
        raise TokenRefused(f"the assertion's aud must be {APPLE_AUDIENCE}") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRefused("the assertion's signature does not match the account's key") from exc
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"the client assertion is malformed ({exc})") from exc
    return claims


def _check_times(claims: Mapping[str, object], now: datetime) -> None:
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise TokenRefused("the assertion's iat and exp must be numbers")
    if exp <= now.timestamp():
        raise TokenRefused("the client assertion has expired")
    if exp - iat > MAX_ASSERTION_LIFETIME.total_seconds():
        raise TokenRefused("the assertion's exp is more than 180 days after its iat")


def issue_access_token(
    session: Session, params: Mapping[str, str], own_token_url: str, now: datetime
) -> IssuedAccess:
    """Check a token request as Apple does and store a new access token (hashed); a reused
    assertion is accepted, as clients cache 180-day assertions."""
    if params.get("grant_type") != GRANT_TYPE:
        raise TokenRefused("grant_type must be client_credentials")
    if params.get("client_assertion_type") != ASSERTION_TYPE:
        raise TokenRefused(f"client_assertion_type must be {ASSERTION_TYPE}")
    client_id = params.get("client_id", "")
    account = session.exec(
        select(ApiAccount).where(
            ApiAccount.client_id == client_id, col(ApiAccount.revoked_at).is_(None)
        )
    ).first()
    if account is None or account.id is None:
        raise TokenRefused("no live API account has this client_id")
    claims = _claims(params.get("client_assertion", ""), account, [APPLE_AUDIENCE, own_token_url])
    if claims.get("sub") != client_id:
        raise TokenRefused("the assertion's sub must be the client_id")
    _check_times(claims, now)
    scope = SCOPES[account.scope]
    if params.get("scope", scope) != scope:
        raise TokenRefused(f"this account's scope is {scope}")
    token = secrets.token_urlsafe(32)
    session.add(
        ApiAccessToken(
            token_hash=digest(token),
            account_id=account.id,
            created_at=now,
            expires_at=now + TOKEN_LIFETIME,
        )
    )
    session.exec(  # expired tokens are of no use to anyone: prune this account's
        sa.delete(ApiAccessToken).where(
            col(ApiAccessToken.account_id) == account.id, col(ApiAccessToken.expires_at) <= now
        )
    )
    return IssuedAccess(token, int(TOKEN_LIFETIME.total_seconds()), scope)


_CALLER = (
    sa.select(col(ApiAccount.id), col(ApiAccount.client_id), col(ApiAccount.scope))
    .join(ApiAccessToken, col(ApiAccessToken.account_id) == col(ApiAccount.id))
    .where(
        col(ApiAccessToken.token_hash) == sa.bindparam("hash"),
        col(ApiAccessToken.expires_at) > sa.bindparam("now"),
        col(ApiAccount.revoked_at).is_(None),
    )
)


def caller_of(connection: sa.Connection, token: str | None, now: datetime) -> Caller | None:
    """The live account whose unexpired access token this is (None: no such token)."""
    if not token:
        return None
    row = connection.execute(_CALLER, {"hash": digest(token), "now": now}).first()
    return Caller(row[0] or 0, row[1], row[2]) if row else None
