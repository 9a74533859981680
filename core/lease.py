"""Named leases in the database: with several processes, only the holder runs the sweeps.

`acquire` is atomic across processes on SQLite and PostgreSQL: it INSERTs the row (in a SAVEPOINT,
so a conflict is harmless) and otherwise takes it with one conditional UPDATE whose WHERE admits
only the current holder or an expired lease, checking the row count. The lease is held once the
caller's unit of work commits; renew it well within `ttl` (e.g. every ttl/3).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.models import Lease

SCHEDULER = "scheduler"  # held by the process that runs the sweeps (`serve` or `scheduler`)


def acquire(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew lease `name` for `holder` until now + ttl; False if someone else holds it."""
    until = now + ttl
    try:
        with session.begin_nested():
            session.execute(sa.insert(Lease).values(name=name, holder=holder, expires_at=until))
        return True
    except IntegrityError:
        pass
    result = session.execute(
        sa.update(Lease)
        .where(
            col(Lease.name) == name,
            sa.or_(col(Lease.holder) == holder, col(Lease.expires_at) < now),
        )
        .values(holder=holder, expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(Any, result).rowcount == 1)


def release(session: Session, name: str, holder: str) -> None:
    """Give the lease up if `holder` has it."""
    session.execute(
        sa.delete(Lease)
        .where(col(Lease.name) == name, col(Lease.holder) == holder)
        .execution_options(synchronize_session=False)
    )


def holder(session: Session, name: str, now: datetime) -> str | None:
    """Who holds lease `name` at `now` (None when free or expired)."""
    return session.exec(
        select(Lease.holder).where(Lease.name == name, col(Lease.expires_at) >= now)
    ).first()
