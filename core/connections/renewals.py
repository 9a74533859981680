"""Automatic renewal: a connected server's token renewed and installed N days before it expires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from core.models import MdmConnection, Server, Token, TokenStatus
from core.people import alerts
from core.roles import Actor

KIND = "autorenew"
RENEWER = Actor("mdmbot", operator=True)  # who the audit log names for automatic renewals


@dataclass(frozen=True)
class DueRenewal:
    """An active token whose server renews it automatically, claimed once."""

    claim_id: int
    token_id: int
    server_id: int
    server_name: str
    expires_at: datetime


def claim_renewals(session: Session, now: datetime) -> list[DueRenewal]:
    """Active tokens inside their server's renewal window, each claimed once (like alerts)."""
    rows = session.exec(
        select(Token, Server.name, MdmConnection.auto_renew_days)
        .join(Server, col(Server.id) == col(Token.server_id))
        .join(MdmConnection, col(MdmConnection.server_id) == col(Token.server_id))
        .where(
            Token.status == TokenStatus.ACTIVE,
            col(MdmConnection.auto_renew_days).is_not(None),
            col(Server.removed_at).is_(None),
        )
    ).all()
    due: list[DueRenewal] = []
    for token, name, days in rows:
        if days is None or token.id is None or token.expires_at - timedelta(days=days) > now:
            continue
        claim = alerts.insert_claim(session, token.id, days, now, kind=KIND)
        if claim is not None:
            due.append(DueRenewal(claim, token.id, token.server_id, name, token.expires_at))
    return due
