"""Scheduled backups: one a day into MDMBOT_BACKUP_DIR, the newest N kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col

from core import lease
from core.models import Lease

BACKUP_LEASE = "backup"
FAILURE_LEASE = "backup-failed"
BACKUP_EVERY = timedelta(hours=23)  # a day, less the drift of hourly sweeps
REMEMBER_FAILURE = timedelta(days=3650)
NAME = re.compile(r"^mdmbot-(\d{8}T\d{6}Z)\.mdmbackup$")


def backup_path(directory: Path, now: datetime) -> Path:
    """Where the backup taken at `now` goes."""
    return directory / f"mdmbot-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.mdmbackup"


def scheduled_backups(directory: Path) -> list[Path]:
    """The scheduled backups in `directory`, oldest first."""
    try:
        return sorted(p for p in directory.iterdir() if NAME.match(p.name))
    except OSError:  # missing, or not a directory: no backups there
        return []


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` scheduled backups; the deleted ones."""
    old = scheduled_backups(directory)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def newest_age(directory: Path, now: datetime) -> float | None:
    """Seconds since the newest scheduled backup was taken (None: there is none)."""
    found = scheduled_backups(directory)
    if not found:
        return None
    match = NAME.match(found[-1].name)
    assert match is not None
    taken = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return (now - taken).total_seconds()


def claim_backup(session: Session, holder: str, now: datetime) -> bool:
    """Whether this sweep takes today's backup (the lease lasts a day)."""
    return lease.acquire(session, BACKUP_LEASE, f"{holder}@{now.isoformat()}", now, BACKUP_EVERY)


def give_back(session: Session, holder: str, now: datetime) -> None:
    """A failed backup: the next sweep tries again."""
    lease.release(session, BACKUP_LEASE, f"{holder}@{now.isoformat()}")


def first_failure(session: Session, now: datetime) -> bool:
    """Whether this failure is the first since the last good backup (so it is reported)."""
    holder = f"failed@{now.isoformat()}"
    return lease.acquire(session, FAILURE_LEASE, holder, now, REMEMBER_FAILURE)


def forget_failure(session: Session) -> None:
    """A good backup (or an unsent report): the next failure is reported again."""
    session.execute(sa.delete(Lease).where(col(Lease.name) == FAILURE_LEASE))
