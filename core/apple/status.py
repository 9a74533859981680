"""Apple mode's sync state: the failure going on (shown on the Home), alerted once per kind, and
cleared by the next sync that succeeds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from core.apple import refusals
from core.apple.api import AppleError
from core.apple.refusals import Refused
from core.errors import MdmbotError
from core.models import AppleSync, Server

ROW = 1


@dataclass(frozen=True)
class SyncHealth:
    """What the Home shows: the last success and the failure going on (None: none)."""

    last_success_at: datetime | None
    failing_kind: str | None
    failing_message: str | None
    failing_since: datetime | None
    refused: tuple[Refused, ...] = ()  # token files refused, until a token is taken in


def lock(session: Session) -> None:
    """Take the sync state's row lock: two syncs (a sweep, `apple sync`) apply one at a time."""
    _row(session)


def _row(session: Session) -> AppleSync:
    row = session.get(AppleSync, ROW, with_for_update=True)
    if row is None:  # two first syncs at once: one inserts, the other waits for its row
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        session.execute(insert(AppleSync).values(id=ROW, alerted_kinds="").on_conflict_do_nothing())
        row = session.get(AppleSync, ROW, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def health(session: Session) -> SyncHealth:
    """The sync's current state, and the token files refused."""
    row = session.get(AppleSync, ROW) or AppleSync(id=ROW)
    return SyncHealth(row.last_success_at, row.failing_kind, row.failing_message,
                      row.failing_since, tuple(refusals.shown(session)))  # fmt: skip


def kind_of(error: MdmbotError) -> str:
    """The failure kind of an error (a setting Apple mode cannot work with counts as refused)."""
    return error.kind if isinstance(error, AppleError) else "refused"


def record_failure(session: Session, error: MdmbotError, now: datetime) -> bool:
    """Remember a failed sync; True when this kind was not alerted yet since the last success
    (the caller posts the one alert)."""
    row = _row(session)
    kind = kind_of(error)
    if row.failing_kind is None:
        row.failing_since = now
    row.failing_kind, row.failing_message = kind, error.message
    alerted = set(filter(None, row.alerted_kinds.split(",")))
    first = kind not in alerted
    row.alerted_kinds = ",".join(sorted(alerted | {kind}))
    session.add(row)
    return first


def alert_not_posted(session: Session, kind: str) -> None:
    """The alert for a failure kind could not be posted: the next failed sync alerts it again."""
    row = _row(session)
    alerted = set(filter(None, row.alerted_kinds.split(","))) - {kind}
    row.alerted_kinds = ",".join(sorted(alerted))
    session.add(row)


def record_success(session: Session, now: datetime) -> bool:
    """Remember a successful sync; True when it ends a failure that had been alerted."""
    row = _row(session)
    ended = bool(row.alerted_kinds)
    row.last_success_at = now
    row.failing_kind = row.failing_message = row.failing_since = None
    row.alerted_kinds = ""
    session.add(row)
    return ended


def server_link(session: Session, server_id: int) -> dict[str, Any]:
    """A server's link to Apple: its `mdmServers` id and Apple's `lastConnectedDateTime`."""
    server = session.get(Server, server_id)
    if server is None:
        return {"id": None, "last_connected_at": None}
    return {"id": server.apple_id, "last_connected_at": server.apple_last_connected_at}
