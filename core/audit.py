"""The audit log: one row for every change."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session

from core.models import AuditEvent
from core.roles import Actor


def record(
    session: Session, actor: Actor, action: str, subject: str, now: datetime, **detail: Any
) -> None:
    """Add an audit event to the current unit of work (never with secrets in `detail`)."""
    session.add(
        AuditEvent(
            actor=actor.label,
            action=action,
            subject=subject,
            detail=json.dumps(detail, sort_keys=True, default=str) if detail else "",
            at=now,
        )
    )
