"""A checklist's latest daily reminder: edited when the checklist changes, closed with it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.models import RotationCase


def reminder_of(session: Session, case_id: int) -> str | None:
    """The ts of the case's latest reminder (in the checklist's thread), if one was posted."""
    return session.exec(select(RotationCase.reminder_ts).where(RotationCase.id == case_id)).first()


def record_reminder(session: Session, case_id: int, ts: str | None) -> None:
    """Remember the latest reminder (None: it was closed and needs no more edits)."""
    session.execute(
        sa.update(RotationCase).where(col(RotationCase.id) == case_id).values(reminder_ts=ts)
    )
