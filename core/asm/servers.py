"""Writing mdmServers (Apple Business API 2.1, ASM-API.md §4.6 to 4.8): create, change, delete,
with mdmbot's usual name rules, certificate checks and roles (an API account is an Administrator).
As at Apple, a server created through the API has no token yet."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, func, select

from core.asm.inventory import PRODUCT_FAMILIES, server_id_of
from core.asm.oauth import Caller
from core.devices import inventory
from core.devices.changelog import defaults
from core.devices.unlink import remove_server
from core.errors import InvalidInput, PermissionDenied
from core.models import Device
from core.roles import Actor
from core.tokens import servers
from core.tokens.certificates import MAX_CERT_BYTES
from core.tokens.issuance import discard_token
from core.vault import Vault

WHY_DISCARDED = "created through the School Manager API: no token until one is asked for"
FAMILY_OF = {apple: ours for ours, apple in PRODUCT_FAMILIES.items()}


class ServerInUse(InvalidInput):
    """A server that still has devices cannot be deleted (unassign them first)."""


@dataclass(frozen=True)
class Changes:
    """What a PATCH asks for; None: leave as it is."""

    name: str | None = None
    release_devices: bool | None = None
    families: list[str] | None = None


def _actor(caller: Caller) -> Actor:
    if caller.scope != "business":
        raise PermissionDenied(
            "Apple School Manager API accounts cannot create, change or delete mdmServers."
        )
    return Actor(caller.client_id, api=True)


def certificate_bytes(data: object) -> bytes:
    """The certificate of a `serverCertificate.data` member (base64 DER, or base64 PEM)."""
    if not isinstance(data, str) or len(data) > MAX_CERT_BYTES * 2:
        raise InvalidInput("serverCertificate.data must be the base64 of a certificate.")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("serverCertificate.data is not valid base64.") from None


def create_server(
    session: Session,
    vault: Vault,
    caller: Caller,
    name: str,
    certificate: bytes,
    release_devices: bool,
    now: datetime,
) -> int:
    """Link a server as `/mdm add` does, but keep no token: its first is asked for later."""
    actor = _actor(caller)
    issued = servers.add_server(
        session, vault, actor, name=name, certificate=certificate,
        release_devices=release_devices, now=now,
    )  # fmt: skip
    discard_token(session, actor, issued.token_id, now, WHY_DISCARDED)
    return issued.server_id


def change_server(
    session: Session, caller: Caller, key: str, changes: Changes, now: datetime
) -> int:
    """Rename, switch device release, or set the families this server is the default for."""
    actor = _actor(caller)
    server = servers.find_server_by_id(session, server_id_of(key))
    assert server.id is not None
    servers.edit_server(
        session, actor, server.name, now=now, rename=changes.name,
        release_devices=changes.release_devices,
    )  # fmt: skip
    if changes.families is not None:
        unknown = [f for f in changes.families if f not in FAMILY_OF]
        if unknown:
            raise InvalidInput(
                f"“{str(unknown[0])[:20]}” is not a product family mdmbot knows: "
                + ", ".join(sorted(FAMILY_OF)) + "."
            )  # fmt: skip
        wanted = {FAMILY_OF[f] for f in changes.families}
        current = {f for f, s in defaults(session).items() if s == server.id}
        for family in sorted(current - wanted):
            inventory.set_default(session, actor, family, None, now)
        for family in sorted(wanted - current):
            inventory.set_default(session, actor, family, server.name, now)
    return server.id


def delete_server(session: Session, caller: Caller, key: str, now: datetime) -> None:
    """Remove a server that has no devices (Apple: unassign them first)."""
    actor = _actor(caller)
    server = servers.find_server_by_id(session, server_id_of(key))
    count = session.exec(
        select(func.count()).select_from(Device).where(col(Device.server_id) == server.id)
    ).one()
    if count:
        raise ServerInUse(
            f"“{server.name}” still has {count} device(s) assigned; unassign them first."
        )
    remove_server(session, actor, server.name, now)
