"""Replacing a connection's refused API key: Administrators only, kept in the vault."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlmodel import Session

from core.connections import installs, links
from core.errors import InvalidInput, NotFound
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.servers import find_server_by_id
from core.vault import Vault

API_KEY_FIELD = "mdm_api_key"


def update_api_key(
    session: Session, vault: Vault, actor: Actor, server_id: object, api_key: str, now: datetime
) -> int | None:
    """Store a new API key for the server's connection and queue its active token's install
    again; the install's id (None when the server has no active token)."""
    authorize(session, actor, Permission.MANAGE_ROLES)  # Administrators: the key is a secret
    server = find_server_by_id(session, server_id)
    spec = links.connection_of(session, vault, server.id)
    if spec is None:
        raise NotFound(f"“{server.name}” is not connected to an MDM server.")
    key = api_key.strip()
    if not key or any(ch.isspace() for ch in key):
        raise InvalidInput("Paste the API key as one word, without spaces.", field=API_KEY_FIELD)
    links.save_connection(session, vault, actor, server, replace(spec, api_key=key), now)
    try:
        return installs.push_active(session, server, actor.user_id, now)
    except links.InstallError:
        return None
