"""API accounts of the served School Manager API: create (a new EC P-256 key), list, revoke."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import Session, col, delete, select

from core import audit
from core.asm.models import ApiAccessToken, ApiAccount
from core.errors import InvalidInput, NotFound
from core.people.persons import authorize
from core.roles import Actor, Permission

SCOPES = {"school": "school.api", "business": "business.api"}
PREFIXES = {"school": "SCHOOLAPI", "business": "BUSINESSAPI"}
MAX_LABEL = 64


@dataclass(frozen=True)
class AccountView:
    """What an Administrator sees of an API account (never a key)."""

    client_id: str
    key_id: str
    scope: str
    label: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewAccount:
    """A created account and its private key PEM, shown once and never kept."""

    account: AccountView
    private_key_pem: bytes


def _view(account: ApiAccount) -> AccountView:
    return AccountView(
        account.client_id,
        account.key_id,
        SCOPES[account.scope],
        account.label,
        account.created_by,
        account.created_at,
        account.revoked_at,
    )


def clean_label(text: str) -> str:
    """A label trimmed, inner whitespace collapsed; 1 to 64 characters, no control characters."""
    label = " ".join(text.split())
    if not label:
        raise InvalidInput("Give the API account a label (what will use it).")
    if len(label) > MAX_LABEL:
        raise InvalidInput(f"An API account label is at most {MAX_LABEL} characters.")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in label):
        raise InvalidInput("An API account label cannot hold control characters.")
    return label


def parse_scope(text: str) -> str:
    """`school` or `business` (Apple School Manager or Apple Business)."""
    scope = text.strip().lower().removesuffix(".api")
    if scope not in SCOPES:
        raise InvalidInput(f"“{text.strip()}” is not a scope: school or business.")
    return scope


def create_account(
    session: Session, actor: Actor, label: str, scope: str, now: datetime
) -> NewAccount:
    """Create an API account with a new key pair; only the public key is kept."""
    authorize(session, actor, Permission.MANAGE_API_ACCOUNTS)
    name, kind = clean_label(label), parse_scope(scope)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    account = ApiAccount(
        client_id=f"{PREFIXES[kind]}.{uuid.uuid4()}",
        key_id=str(uuid.uuid4()),
        label=name,
        scope=kind,
        public_key=public.decode("ascii"),
        created_by=actor.label,
        created_at=now,
    )
    session.add(account)
    session.flush()
    audit.record(
        session, actor, "api-account.create", account.client_id, now, label=name, scope=kind
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return NewAccount(_view(account), private)


def list_accounts(session: Session, actor: Actor) -> list[AccountView]:
    """Every API account, newest first, revoked ones too."""
    authorize(session, actor, Permission.MANAGE_API_ACCOUNTS)
    query = select(ApiAccount).order_by(col(ApiAccount.created_at).desc(), col(ApiAccount.id))
    return [_view(a) for a in session.exec(query)]


def revoke_account(session: Session, actor: Actor, client_id: str, now: datetime) -> AccountView:
    """Revoke an account: its access tokens stop working at once and it gets no new ones."""
    authorize(session, actor, Permission.MANAGE_API_ACCOUNTS)
    account = session.exec(
        select(ApiAccount).where(ApiAccount.client_id == client_id.strip())
    ).first()
    if account is None:
        raise NotFound(f"There is no API account with client id {client_id.strip()[:80]}.")
    if account.revoked_at is not None:
        raise InvalidInput(f"The API account {account.client_id} is already revoked.")
    account.revoked_at, account.revoked_by = now, actor.label
    session.add(account)
    session.exec(delete(ApiAccessToken).where(col(ApiAccessToken.account_id) == account.id))
    audit.record(session, actor, "api-account.revoke", account.client_id, now, label=account.label)
    return _view(account)
