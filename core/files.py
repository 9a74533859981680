"""Private files and directories: the data directory (0700) and the SQLite database (0600)."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ConfigError

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def refuse_file(path: Path, setting: str) -> None:
    """Refuse a configured directory that is in fact a file."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{setting} ({path}) is a file; it must be a directory.")


def private_directory(path: Path, setting: str) -> Path:
    """Create `path` (mode 0700) or tighten it to 0700; `setting` names it in errors."""
    refuse_file(path, setting)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"Cannot use {path} ({setting}): {exc.strerror or exc}.") from exc
    return path


def private_database(path: Path) -> None:
    """Create the SQLite file (0600) if missing and tighten it and its WAL/SHM files to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for suffix in SQLITE_COMPANIONS:
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                _tighten(companion, 0o600)
    except OSError as exc:
        raise ConfigError(f"Cannot open the database file {path}: {exc.strerror or exc}.") from exc


def _tighten(path: Path, mode: int) -> None:
    """Drop permissions beyond `mode` from a file or directory this user owns."""
    status = path.stat()
    if status.st_uid == os.getuid() and status.st_mode & 0o777 & ~mode:
        path.chmod(status.st_mode & 0o777 & mode)
