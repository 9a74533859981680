"""De-duplication of Slack deliveries: retried events (same event_id), replayed interactions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, delete

from core.models import ProcessedEvent

INTERACTIVE = ("block_actions", "view_submission")


def interaction_key(raw_body: str) -> str:
    """The record key of an interactive payload: a digest of its exact signed body."""
    return "i:" + hashlib.sha256(raw_body.encode("utf-8")).hexdigest()[:62]


def first_delivery(session: Session, event_id: str, now: datetime) -> bool:
    """Record `event_id`; False when it was already handled (by this or another replica)."""
    try:
        with session.begin_nested():
            session.add(ProcessedEvent(event_id=event_id[:64], received_at=now))
    except sa.exc.IntegrityError:
        return False
    return True


def forget_before(session: Session, cutoff: datetime) -> int:
    """Drop records older than `cutoff` (Slack stops retrying after about an hour)."""
    result = session.exec(delete(ProcessedEvent).where(col(ProcessedEvent.received_at) < cutoff))
    return int(result.rowcount or 0)


RETENTION = timedelta(days=2)
