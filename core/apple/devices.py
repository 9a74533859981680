"""Device assignments in Apple mode go to Apple as `orgDeviceActivities` (ASM-API.md §5): post
the activity, poll it up to a wait, and mirror a completed one here at once (the next sync
confirms it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from core import audit
from core.apple.api import Activity, AppleApi, AppleRejected
from core.apple.sync import UnitOfWork
from core.devices.changelog import move
from core.devices.inventory import clean_serial
from core.errors import InvalidInput
from core.models import Device, Server
from core.people.persons import authorize
from core.roles import Actor, Permission
from core.tokens.servers import find_server

ASSIGN, UNASSIGN = "ASSIGN_DEVICES", "UNASSIGN_DEVICES"
POLL_EVERY = 5.0  # seconds between polls (pyaxm waits 10 s, then polls every 20 s)
MAX_SERIALS = 1000


@dataclass
class AppleAssignment:
    """What Apple made of one request: `state` completed, failed or in progress."""

    server: str
    serials: list[str]
    activities: list[Activity] = field(default_factory=list)

    @property
    def state(self) -> str:
        """`completed` when every activity succeeded, `failed` when one failed, else
        `in progress`."""
        if any(a.finished and not a.succeeded for a in self.activities):
            return "failed"
        if all(a.succeeded for a in self.activities):
            return "completed"
        return "in progress"

    def sentence(self) -> str:
        """One line for the person who asked."""
        number = f"{len(self.serials)} device{'' if len(self.serials) == 1 else 's'}"
        ids = ", ".join(a.id for a in self.activities)
        if self.state == "completed":
            return f"Apple completed: {number} now on “{self.server}” (activity {ids})."
        if self.state == "failed":
            failed = next(a for a in self.activities if a.finished and not a.succeeded)
            return (
                f"Apple reports a failure ({failed.status} {failed.sub_status}) for {number} "
                f"and “{self.server}” (activity {ids}); see the activity's log in Apple School "
                "Manager."
            )
        return (
            f"Apple is still working on {number} for “{self.server}” (activity {ids}); the next "
            "sync shows the outcome."
        )


def _serials(serials: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(clean_serial(s) for s in serials))
    if not cleaned:
        raise InvalidInput("Give at least one serial number.")
    if len(cleaned) > MAX_SERIALS:
        raise InvalidInput(f"Send at most {MAX_SERIALS} serial numbers to Apple at a time.")
    return cleaned


def _linked(server: Server, portal: str) -> str:
    if not server.apple_id:
        raise InvalidInput(
            f"“{server.name}” is not linked to {portal} yet: add it there with this "
            "name; the next sync links it."
        )
    return server.apple_id


def assign(
    api: AppleApi,
    unit_of_work: UnitOfWork,
    actor: Actor,
    server_name: str | None,
    serials: Sequence[str],
    *,
    wait: float,
    now: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
) -> AppleAssignment:
    """Assign `serials` to the server (None: unassign them from their servers) through Apple."""
    cleaned = _serials(serials)
    with unit_of_work() as session:
        authorize(session, actor, Permission.MANAGE_DEVICES)
        if server_name is not None:
            server = find_server(session, server_name)
            groups, label = {_linked(server, api.portal): cleaned}, server.name
        else:
            groups, label = _current_servers(session, cleaned), "their servers"
    result = AppleAssignment(label, cleaned)
    kind = ASSIGN if server_name is not None else UNASSIGN
    for apple_id, group in groups.items():
        result.activities.append(api.start_activity(kind, apple_id, group))
    deadline = time.monotonic() + wait
    while result.state == "in progress" and time.monotonic() < deadline:
        sleep(min(POLL_EVERY, max(deadline - time.monotonic(), 0.0)))
        result.activities = [a if a.finished else api.activity(a.id) for a in result.activities]
    with unit_of_work() as session:
        _record(session, actor, kind, groups, result, now())
    return result


def _current_servers(session: Session, serials: list[str]) -> dict[str, list[str]]:
    """Apple server id → the given serials assigned to it (Apple unassigns per server)."""
    rows = session.exec(
        select(Device.serial_number, Server.apple_id)
        .join(Server, col(Device.server_id) == col(Server.id))
        .where(col(Device.serial_number).in_(serials))
    ).all()  # fmt: skip
    groups: dict[str, list[str]] = {}
    for serial, apple_id in rows:
        if apple_id:
            groups.setdefault(apple_id, []).append(serial)
    if not groups:
        raise AppleRejected("None of these devices is assigned to a server Apple knows.")
    return groups


def _record(
    session: Session,
    actor: Actor,
    kind: str,
    groups: dict[str, list[str]],
    result: AppleAssignment,
    now: datetime,
) -> None:
    """Audit the request; mirror a completed one (the next sync confirms it)."""
    audit.record(session, actor, "devices.apple_activity", result.server, now, kind=kind,
                 activities=[a.id for a in result.activities], state=result.state,
                 count=len(result.serials))  # fmt: skip
    if result.state != "completed":
        return
    ids = {s.apple_id: s.id for s in session.exec(select(Server)) if s.apple_id}
    for apple_id, group in groups.items():
        target = ids.get(apple_id) if kind == ASSIGN else None
        for device in session.exec(select(Device).where(col(Device.serial_number).in_(group))):
            move(session, device, target, actor.label, now)
