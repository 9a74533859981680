"""Linking a server in Apple mode (issue 33, item 3): Apple Business creates it through its API
(`POST /v1/mdmServers`, ASM-API.md §4.6); Apple School Manager has no such API, so a person adds
it in the portal and the next sync links it by name. Either way mdmbot keeps the certificate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.serialization import Encoding
from sqlmodel import Session, select

from core import audit
from core.apple.api import AppleApi
from core.apple.sync import UnitOfWork
from core.errors import DuplicateName
from core.models import Server
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.certificates import LoadedCertificate
from core.tokens.names import clean_name, safe_filename
from core.tokens.servers import check_name_free, store_certificate

Connect = Callable[[Session, Server], None]


@dataclass(frozen=True)
class Linked:
    """A server added in Apple mode; `apple_id` None: waiting for the next sync to link it."""

    server_id: int
    name: str
    apple_id: str | None
    certificate_pem: str
    certificate_file: str


def school_steps(name: str, release_devices: bool, certificate_file: str) -> list[str]:
    """What a person does in Apple School Manager to add the server (it has no API for it)."""
    release = "on" if release_devices else "off"
    return [
        "Sign in to Apple School Manager (school.apple.com) as an Administrator, Site Manager "
        "or Device Enrollment Manager.",
        "Select your name at the bottom of the sidebar, then Preferences → Your MDM Servers → "
        "Add.",
        f"Name it exactly “{name}” (mdmbot links it by this name at its next sync) and turn "
        f"“Allow this MDM server to release devices” {release}.",
        f"Upload the public key certificate {certificate_file}, then Save.",
    ]


def next_step(name: str, portal: str) -> str:
    """How the server's token reaches mdmbot from Apple's `portal` (no API downloads it,
    ASM-API.md §6)."""
    return (
        f"Next: on “{name}” in {portal} choose Download Token, and drop the file in "
        f"the bot's DM (or `/mdm token {name}`), or run `mdmbot token import \"{name}\" FILE`."
    )


def link_server(
    api: AppleApi | None,
    unit_of_work: UnitOfWork,
    actor: Actor,
    *,
    name: str,
    certificate: LoadedCertificate,
    release_devices: bool,
    now: datetime,
    connect: Connect | None = None,
) -> Linked:
    """Add the server: created at Apple first when `api` is given (Business), else left for the
    next sync to link by name (School). Checked before Apple is asked."""
    display = clean_name(name)
    with unit_of_work() as session:
        authorize(session, actor, Permission.MANAGE_SERVERS)
        check_name_free(session, display)
    file_name = f"{safe_filename(display)}.cer"
    der = certificate.certificate.public_bytes(Encoding.DER)
    created = api.create_server(display, der, file_name, release_devices) if api else None
    apple_id = created.id if created else None
    with unit_of_work() as session:
        server = None
        if apple_id is not None:  # a sync may have brought it in meanwhile
            server = session.exec(select(Server).where(Server.apple_id == apple_id)).first()
        if server is None:
            server = Server(
                name=display, normalized_name=check_name_free(session, display),
                release_devices=release_devices, created_by=actor.label, created_at=now,
                apple_id=apple_id,
            )  # fmt: skip
        elif server.removed_at is not None:
            raise DuplicateName(f"Apple removed “{display}” meanwhile; nothing was linked.")
        session.add(server)
        session.flush()
        store_certificate(session, server, certificate, actor, now)
        audit.record(session, actor, "server.add", display, now, apple_id=apple_id,
                     certificate=certificate.fingerprint_sha256)  # fmt: skip
        if connect is not None:
            connect(session, server)
        assert server.id is not None
        return Linked(server.id, display, apple_id, certificate.pem, file_name)
