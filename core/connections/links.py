"""Which MDM server installs a server's tokens, and how: connections and the installer interface."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from sqlmodel import Session, select

from core import audit
from core.errors import InvalidInput, MdmbotError, NotFound
from core.models import MdmConnection, Server, TokenInstall
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.vault import Vault

KINDS = {"nanodep": "NanoDEP", "fleet": "Fleet", "command": "install command"}
MAX_AUTO_RENEW_DAYS = 180


class InstallError(MdmbotError):
    """The MDM server did not take the token (or its certificate); the message is one line."""


@dataclass(frozen=True)
class ConnectionSpec:
    """A connection as the installer needs it; the API key only in memory, never shown."""

    kind: str
    url: str | None = None
    dep_name: str | None = None
    base_url: str | None = None
    command: str | None = None
    api_key: str | None = field(default=None, repr=False)
    remote_id: str | None = None
    auto_renew_days: int | None = None

    def label(self) -> str:
        """How people see the connection: `NanoDEP (school1)`, `Fleet (fleet.example.org)`."""
        detail = self.dep_name or urlsplit(self.url or "").hostname or (self.command or "")
        if self.kind == "command":
            detail = (self.command or "").split(" ")[0].rsplit("/", 1)[-1]
        return f"{KINDS[self.kind]} ({detail})"


@dataclass(frozen=True)
class TokenPush:
    """One token file on its way to its server's MDM server."""

    server_name: str
    filename: str
    content: bytes = field(repr=False)
    new_key: bool = False  # replaces this server's own token there, which had another consumer key


@dataclass(frozen=True)
class Installed:
    """What the MDM server answered to an install."""

    remote_id: str | None = None  # its id for the token (Fleet's ABM token), for renewals
    expires_at: datetime | None = None  # the token's expiry as the MDM server read it


class Installer(Protocol):
    """What installs tokens into MDM servers (bot/mdm implements it)."""

    @property
    def deadline(self) -> float:
        """The most seconds one install or certificate fetch takes."""
        ...

    def check(self, spec: ConnectionSpec) -> ConnectionSpec:
        """The connection as it will be used, checked as far as it can be without a call."""
        ...

    def fetch_certificate(self, spec: ConnectionSpec, server_name: str) -> bytes:
        """The MDM server's public key certificate (PEM or DER); InstallError if refused."""
        ...

    def install(self, spec: ConnectionSpec, push: TokenPush) -> Installed:
        """Upload the token; what the MDM server answered; InstallError if refused."""
        ...


def make_spec(
    kind: str,
    *,
    url: str | None = None,
    dep_name: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    command: str | None = None,
    auto_renew_days: int | None = None,
) -> ConnectionSpec:
    """A checked connection; anything missing or malformed is one line naming the option."""
    if kind not in KINDS:
        raise InvalidInput(
            f"Unknown MDM kind “{kind}”; use nanodep, fleet or command.", field="mdm_kind"
        )
    if kind in ("nanodep", "fleet"):
        url = _http_url(url, "--mdm-url", "mdm_url")
        if not api_key or not api_key.strip():
            raise InvalidInput(
                f"A {KINDS[kind]} connection needs an API key (--mdm-api-key-file).",
                field="mdm_api_key",
            )
        api_key = api_key.strip()
        if any(c.isspace() or not c.isprintable() for c in api_key):
            raise InvalidInput(
                "The API key is one line without spaces or control characters "
                "(--mdm-api-key-file).",
                field="mdm_api_key",
            )
    if kind == "nanodep":
        dep_name = (dep_name or "").strip()
        if not dep_name or "/" in dep_name or any(ord(c) < 32 for c in dep_name):
            raise InvalidInput(
                "A NanoDEP connection needs its DEP name (--mdm-dep-name), no '/'.",
                field="mdm_dep_name",
            )
        base_url = _http_url(base_url, "--mdm-base-url", "mdm_base_url") if base_url else None
    else:
        dep_name = base_url = None
    if kind == "command":
        if not command or not command.strip():
            raise InvalidInput(
                "A command connection needs the program to run (--mdm-command).",
                field="mdm_command",
            )
        url = api_key = None
    else:
        command = None
    if auto_renew_days is not None and not 1 <= auto_renew_days <= MAX_AUTO_RENEW_DAYS:
        raise InvalidInput(
            f"Automatic renewal takes 1 to {MAX_AUTO_RENEW_DAYS} days before expiry.",
            field="auto_renew",
        )
    return ConnectionSpec(kind, url, dep_name, base_url, command, api_key, None, auto_renew_days)


APPLE_DEP_URL = "https://mdmenrollment.apple.com/"  # Apple's DEP API (DEP-API.md: base URL)


def nanodep_base_url(public_url: str | None, *, apple_mode: bool = False) -> str | None:
    """Where NanoDEP's DEP client is pointed by default: in Apple mode Apple's DEP API (the
    tokens are Apple's), else mdmbot's public DEP URL, if set."""
    if apple_mode:
        return APPLE_DEP_URL
    return public_url + "/" if public_url else None  # the setting is kept without its slash


def _http_url(value: str | None, option: str, field: str) -> str:
    parts = urlsplit((value or "").strip())
    try:
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError:
        parts = parts._replace(scheme="")
    if any(c.isspace() or not c.isprintable() for c in (value or "").strip()):
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"{option} must be an http(s) URL such as https://mdm.example.org.", field=field
        )
    if "@" in parts.netloc:
        raise InvalidInput(
            f"{option} must not hold a user name or password; give the API key in its file.",
            field=field,
        )
    if parts.query or parts.fragment or "?" in (value or "") or "#" in (value or ""):
        raise InvalidInput(f"{option} must not hold a query (?) or fragment (#).", field=field)
    return (value or "").strip().rstrip("/")


def plain_http(spec: ConnectionSpec) -> str | None:
    """A warning when the API key would cross a network unencrypted (not to this host)."""
    if spec.url is None or not spec.url.startswith("http://"):
        return None
    host = urlsplit(spec.url).hostname or ""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"{spec.url} is plain http://: the API key and every token cross the network "
        "unencrypted; use https:// unless the network to the MDM server is trusted."
    )


def save_connection(
    session: Session,
    vault: Vault,
    actor: Actor,
    server: Server,
    spec: ConnectionSpec,
    now: datetime,
) -> MdmConnection:
    """Connect `server` to its MDM server (replacing any earlier connection); audited, no secret."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    assert server.id is not None
    row = session.exec(select(MdmConnection).where(MdmConnection.server_id == server.id)).first()
    if row is None:
        row = MdmConnection(server_id=server.id, kind=spec.kind, created_by=actor.label)
    elif (row.kind, row.url, row.dep_name) != (spec.kind, spec.url, spec.dep_name):
        row.remote_id = None
    row.kind, row.url, row.dep_name = spec.kind, spec.url, spec.dep_name
    row.base_url = spec.base_url
    row.command, row.auto_renew_days, row.created_at = spec.command, spec.auto_renew_days, now
    row.secret = vault.encrypt(spec.api_key) if spec.api_key else None
    row.last_install_error = None
    session.add(row)
    session.flush()
    audit.record(session, actor, "server.connect", server.name, now, kind=spec.kind, url=spec.url)
    return row


def disconnect(session: Session, actor: Actor, server: Server, now: datetime) -> None:
    """Forget the server's connection; installs still waiting are dropped."""
    authorize(session, actor, Permission.MANAGE_SERVERS)
    row = session.exec(select(MdmConnection).where(MdmConnection.server_id == server.id)).first()
    if row is None:
        raise NotFound(f"“{server.name}” is not connected to an MDM server.")
    for waiting in session.exec(
        select(TokenInstall).where(
            TokenInstall.server_id == server.id, TokenInstall.status == "pending"
        )
    ):
        waiting.status, waiting.claimed_until = "dropped", None
        session.add(waiting)
    session.delete(row)
    audit.record(session, actor, "server.disconnect", server.name, now, kind=row.kind)


def connection_row(session: Session, server_id: int | None) -> MdmConnection | None:
    """The server's connection row, if it has one."""
    return session.exec(select(MdmConnection).where(MdmConnection.server_id == server_id)).first()


def connection_of(session: Session, vault: Vault, server_id: int | None) -> ConnectionSpec | None:
    """The server's connection with its API key decrypted (for the installer only)."""
    row = connection_row(session, server_id)
    if row is None:
        return None
    return ConnectionSpec(
        row.kind,
        row.url,
        row.dep_name,
        row.base_url,
        row.command,
        vault.decrypt(row.secret) if row.secret else None,
        row.remote_id,
        row.auto_renew_days,
    )


def describe_spec(row: MdmConnection) -> ConnectionSpec:
    """A connection as people see it: never its API key."""
    return ConnectionSpec(row.kind, row.url, row.dep_name, command=row.command)


def describe(session: Session, server_id: int | None) -> dict[str, object] | None:
    """What `server show` tells of the connection (never the secret); None when not connected."""
    row = connection_row(session, server_id)
    if row is None:
        return None
    spec = describe_spec(row)
    return {
        "kind": row.kind,
        "label": spec.label(),
        "url": row.url,
        "dep_name": row.dep_name,
        "base_url": row.base_url,
        "auto_renew_days": row.auto_renew_days,
        "last_install_at": row.last_install_at,
        "last_install_error": row.last_install_error,
    }
