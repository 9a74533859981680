"""`mdmbot key rotate`: every stored secret re-encrypted with the new key in one transaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session

from core import audit
from core.backup.snapshot import tables
from core.errors import ConfigError
from core.models import KeyCheck
from core.roles import Actor
from core.vault import (
    KEY_FILE_NAME,
    SEED_ID,
    Vault,
    open_vault,
    read_key_file,
    write_key_file,
)


def rotate_secrets(session: Session, vault: Vault, actor: Actor, now: datetime) -> int:
    """Re-encrypt every encrypted column with the vault's first key; how many values changed."""
    if session.get(KeyCheck, SEED_ID) is None:  # derived keys (cursors) outlive the old key
        session.add(KeyCheck(id=SEED_ID, value=vault.sealed_seed(), created_at=now))
        session.flush()
    changed = 0
    for table in tables():
        columns = [c for c in table.columns if c.info.get("encrypted")]
        keys = list(table.primary_key.columns)
        if not columns:
            continue
        for row in session.execute(sa.select(*keys, *columns)).all():
            values = {c.name: _rotate(vault, row._mapping[c]) for c in columns}
            where = [k == row._mapping[k] for k in keys]
            session.execute(sa.update(table).where(*where).values(**values))
            changed += len(values)
    audit.record(session, actor, "key.rotate", vault.key_id(), now, values=changed)
    return changed


def _rotate(vault: Vault, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return vault.rotate(value)
    except InvalidToken as exc:
        raise ConfigError(
            "A stored secret opens with none of the configured keys; nothing was re-encrypted "
            "(MDMBOT_SECRET_KEY must list the new key first, then the old one)."
        ) from exc


def rotate_env_key(
    engine: sa.Engine, secret_key: str, data_dir: Path, actor: Actor, now: datetime
) -> tuple[Vault, int]:
    """MDMBOT_SECRET_KEY="NEW,OLD": everything re-encrypted with NEW."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        vault = open_vault(session, secret_key, data_dir, now)
        if len(vault.keys) < 2:
            raise ConfigError(
                'MDMBOT_SECRET_KEY holds one key: set it to "NEW,OLD" (the new key first) on '
                "every replica, then run `mdmbot key rotate` (docs/backups.md, key rotation)."
            )
        return vault, rotate_secrets(session, vault, actor, now)


def rotate_key_file(
    engine: sa.Engine, data_dir: Path, actor: Actor, now: datetime
) -> tuple[Vault, int]:
    """The key file: a new key generated, secrets re-encrypted, the old key dropped."""
    path = data_dir / KEY_FILE_NAME
    old = read_key_file(path)
    if not old:
        raise ConfigError(f"There is no secret key file {path} to rotate (nor MDMBOT_SECRET_KEY).")
    new = Fernet.generate_key()
    write_key_file(path, [new, *old])  # a crash from here on leaves a file with both keys
    with Session(engine, expire_on_commit=False) as session, session.begin():
        vault = open_vault(session, None, data_dir, now)
        changed = rotate_secrets(session, vault, actor, now)
    write_key_file(path, [new])
    return vault, changed
