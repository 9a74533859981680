"""The key file's neighbours: old keys kept after a rotation, and the lock of processes using it.

Every process that encrypts with the key file holds a shared `flock` on `secret.key.lock` for
as long as it lives; `mdmbot key rotate` takes it exclusively, so it never rotates under a
process that would go on encrypting with the key it replaces.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.errors import ConfigError

KEY_FILE_NAME = "secret.key"
OLD_PREFIX = KEY_FILE_NAME + ".old-"
LOCK_NAME = KEY_FILE_NAME + ".lock"


def old_key_path(data_dir: Path, key_id: str) -> Path:
    """Where a rotated-out key is kept (`secret.key.old-key-…`)."""
    return data_dir / f"{OLD_PREFIX}{key_id}"


def old_key_paths(data_dir: Path) -> list[Path]:
    """The kept old keys, newest first."""
    try:
        found = [p for p in data_dir.glob(OLD_PREFIX + "*") if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class KeyFileLock:
    """A hold on the key file: shared while a process uses it, exclusive while rotating."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:  # a read-only data directory (a mounted key): no rotation writes there
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def share(self) -> None:
        """Hold the key file as one of its users; refused while a rotation holds it."""
        if not self._take(fcntl.LOCK_SH):
            raise ConfigError(
                f"The secret key in {self.path.parent / KEY_FILE_NAME} is being rotated "
                "(`mdmbot key rotate`); run this again when it is done."
            )

    def exclusive(self) -> bool:
        """Hold the key file alone (False: another process uses it)."""
        return self._take(fcntl.LOCK_EX)

    def _take(self, kind: int) -> bool:
        if self._fd < 0:
            return True
        try:
            fcntl.flock(self._fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks: nothing to hold
            return True
        return True
