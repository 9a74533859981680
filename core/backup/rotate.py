"""`mdmbot key rotate`: every stored secret re-encrypted with the new key in one transaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session

from core import audit, lease
from core.backup.snapshot import tables
from core.errors import ConfigError
from core.models import KeyCheck
from core.progress import Progress, Tally
from core.roles import Actor
from core.vault import (
    KEY_FILE_NAME,
    SEED_ID,
    SETTING,
    KeyFileLock,
    Vault,
    fingerprint,
    old_key_path,
    open_vault,
    read_key_file,
    write_key_file,
)


def rotate_secrets(
    session: Session, vault: Vault, actor: Actor, now: datetime, progress: Progress | None = None
) -> int:
    """Re-encrypt every encrypted column with the vault's first key; how many values changed."""
    if session.get(KeyCheck, SEED_ID) is None:  # derived keys (cursors) outlive the old key
        session.add(KeyCheck(id=SEED_ID, value=vault.sealed_seed(), created_at=now))
        session.flush()
    changed = 0
    total = _count(session) if progress else 0
    tally = Tally(progress, "Re-encrypting secrets", total, "rows", every=1)
    for table in tables():
        columns = [c for c in table.columns if c.info.get("encrypted")]
        keys = list(table.primary_key.columns)
        if not columns:
            continue
        for row in tally.each(session.execute(sa.select(*keys, *columns)).all()):
            values = {c.name: _rotate(vault, row._mapping[c]) for c in columns}
            where = [k == row._mapping[k] for k in keys]
            session.execute(sa.update(table).where(*where).values(**values))
            changed += len(values)
    audit.record(session, actor, "key.rotate", vault.key_id(), now, values=changed)
    return changed


def _count(session: Session) -> int:
    """How many rows hold an encrypted column."""
    held = [t for t in tables() if any(c.info.get("encrypted") for c in t.columns)]
    count = sa.func.count()
    return sum(int(session.execute(sa.select(count).select_from(t)).scalar_one()) for t in held)


def _rotate(vault: Vault, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return vault.rotate(value)
    except InvalidToken as exc:
        hint = (
            "MDMBOT_SECRET_KEY must list the new key first, then the old one"
            if vault.source == SETTING
            else "restore the key file from your backup"
        )
        raise ConfigError(
            f"A stored secret opens with none of the keys of {vault.source}; nothing was "
            f"re-encrypted ({hint})."
        ) from exc


def rotate_env_key(
    engine: sa.Engine,
    secret_key: str,
    data_dir: Path,
    actor: Actor,
    now: datetime,
    progress: Progress | None = None,
) -> tuple[Vault, int]:
    """MDMBOT_SECRET_KEY="NEW,OLD": everything re-encrypted with NEW."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        vault = open_vault(session, secret_key, data_dir, now)
        if len(vault.keys) < 2:
            raise ConfigError(
                'MDMBOT_SECRET_KEY holds one key: set it to "NEW,OLD" (the new key first) on '
                "every replica, then run `mdmbot key rotate` (docs/backups.md, key rotation)."
            )
        return vault, rotate_secrets(session, vault, actor, now, progress)


def rotate_key_file(
    engine: sa.Engine, data_dir: Path, actor: Actor, now: datetime, progress: Progress | None = None
) -> tuple[Vault, int]:
    """The key file: a new key, secrets re-encrypted, the old key kept as secret.key.old-ID."""
    path = data_dir / KEY_FILE_NAME
    old = read_key_file(path)
    if not old:
        raise ConfigError(f"There is no secret key file {path} to rotate (nor MDMBOT_SECRET_KEY).")
    hold = KeyFileLock(data_dir)
    if not hold.exclusive():
        raise ConfigError(
            f"Another mdmbot process on this host uses the key in {path} (`mdmbot serve`?); "
            "it would go on encrypting with the old key. Stop every mdmbot process, then run "
            "`mdmbot key rotate` again. Nothing was changed."
        )
    with Session(engine) as session, session.begin():
        _refuse_while_served(session, now)
    new = Fernet.generate_key()
    write_key_file(path, [new, *old])  # a crash from here on leaves a file with both keys
    with Session(engine, expire_on_commit=False) as session, session.begin():
        vault = open_vault(session, None, data_dir, now, hold=hold)
        changed = rotate_secrets(session, vault, actor, now, progress)
    for key in old:
        kept = old_key_path(data_dir, fingerprint(key))
        if not kept.exists():
            write_key_file(kept, [key])
    write_key_file(path, [new])
    hold.share()
    return vault, changed


def _refuse_while_served(session: Session, now: datetime) -> None:
    """A process holding the scheduler lease serves this database, maybe from another host."""
    serving = lease.holder(session, lease.SCHEDULER, now)
    if serving is not None:
        raise ConfigError(
            f"mdmbot is serving this database ({serving.rsplit(':', 1)[0]} holds the scheduler "
            "lease); it would go on encrypting with the old key. Stop every `mdmbot serve` and "
            "`mdmbot scheduler`, then run `mdmbot key rotate` again. Nothing was changed."
        )
