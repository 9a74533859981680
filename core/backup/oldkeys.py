"""Old keys kept by `key rotate`: which backups need them, and forgetting one nothing needs."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

from core.backup.archive import BackupReader
from core.backup.schedule import scheduled_backups
from core.errors import InvalidInput, MdmbotError
from core.models import KeyCheck
from core.vault import KEY_CHECK_ID, Vault, old_key_path, old_key_paths, read_key_file

KEY_ID = re.compile(r"key-[0-9a-f]{16}")  # what `core.vault.fingerprint` names


def needing(key_id: str, backup_dir: Path | None) -> list[Path]:
    """The scheduled backups in `backup_dir` that open only with key `key_id`, oldest first."""
    found = []
    for path in scheduled_backups(backup_dir) if backup_dir is not None else []:
        try:
            reader = BackupReader(path)
        except MdmbotError:
            continue  # not readable as a backup: no key opens it
        reader.close()
        if reader.manifest.key_id == key_id:
            found.append(path)
    return found


def forget_old_key(
    engine: sa.Engine, data_dir: Path, key_id: str, backup_dir: Path | None
) -> Path:
    """Delete the kept old key `key_id` unless the database or a scheduled backup needs it."""
    path = old_key_path(data_dir, key_id)
    if not KEY_ID.fullmatch(key_id) or not path.is_file():
        kept = ", ".join(p.name.rsplit(".old-", 1)[1] for p in old_key_paths(data_dir))
        raise InvalidInput(
            f"There is no kept old key {key_id} in {data_dir} (kept: {kept or 'none'})."
        )
    keys = read_key_file(path) or []
    with Session(engine) as session:
        check = session.get(KeyCheck, KEY_CHECK_ID)
    if check is not None and any(Vault(k).can_decrypt(check.value) for k in keys):
        raise InvalidInput(
            f"This database's secrets are still encrypted with {key_id} (restored from an "
            "older backup?); run `mdmbot key rotate` first. Nothing was deleted."
        )
    backups = needing(key_id, backup_dir)
    if backups:
        raise InvalidInput(
            f"{len(backups)} scheduled backups in {backup_dir} need {key_id} (the newest "
            f"{backups[-1].name}); keep the key until they are pruned (MDMBOT_BACKUP_KEEP) or "
            "delete them first. Nothing was deleted."
        )
    path.unlink()
    return path
