"""Device activities (`orgDeviceActivities`, ASM-API.md §5): the moves of `/mdm assign`,
`devices unassign` and `/mdm release`, asked for by an API account, with a per-device CSV log."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from core.asm.inventory import server_id_of
from core.asm.models import ApiActivity
from core.asm.oauth import Caller
from core.devices import inventory
from core.devices.changelog import lock_devices
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.roles import Actor
from core.tokens.servers import find_server_by_id

ASSIGN, UNASSIGN, RELEASE = "ASSIGN_DEVICES", "UNASSIGN_DEVICES", "RELEASE_DEVICES"
TYPES = (ASSIGN, UNASSIGN, RELEASE)
KEPT = timedelta(days=30)  # Apple: activities are retrievable for 30 days
LOG_HEADER = ("Serial Number", "Activity", "MDM Server", "Result", "Details")


@dataclass(frozen=True)
class ActivityView:
    """An activity as the API shows it."""

    id: str
    activity_type: str
    created_at: datetime
    completed_at: datetime | None
    sub_status: str


def _view(row: ApiActivity) -> ActivityView:
    return ActivityView(row.id, row.activity_type, row.created_at, row.completed_at, row.sub_status)


def _outcomes(
    session: Session, serials: list[str]
) -> tuple[dict[str, str], list[str], dict[str, int | None]]:
    """Failures by serial (invalid, unknown, released), the good serials, their servers."""
    failed: dict[str, str] = {}
    good: list[str] = []
    for text in dict.fromkeys(serials):
        try:
            good.append(inventory.clean_serial(text))
        except InvalidInput:
            failed[text.strip()[:40] or "(empty)"] = "not a serial number"
    found = lock_devices(session, good, lock=False)
    for serial in good:
        if serial not in found:
            failed[serial] = "not a device of this organisation"
        elif found[serial].released_at is not None:
            failed[serial] = "released from the organisation"
    live = [s for s in dict.fromkeys(good) if s not in failed]
    return failed, live, {s: found[s].server_id for s in live}


def run_activity(
    session: Session,
    caller: Caller,
    activity_type: str,
    server_key: str | None,
    serials: list[str],
    now: datetime,
) -> ActivityView:
    """Do what the activity asks at once, recording each device's result in its CSV log."""
    if activity_type not in TYPES:
        raise InvalidInput(f"mdmbot does not support the activity type {activity_type[:40]}.")
    if activity_type == RELEASE and caller.scope != "business":
        raise PermissionDenied("RELEASE_DEVICES is for Apple Business API accounts only.")
    if not serials:
        raise InvalidInput("Give at least one device.")
    actor = Actor(caller.client_id, api=True)
    server = None
    if activity_type != RELEASE:
        if server_key is None:
            raise InvalidInput(f"{activity_type} needs an mdmServer relationship.")
        try:
            server = find_server_by_id(session, server_id_of(server_key))
        except NotFound:
            raise InvalidInput(f"There is no MDM server with id '{server_key[:64]}'.") from None
    failed, live, on = _outcomes(session, serials)
    done: dict[str, str] = {}
    if activity_type == ASSIGN and server is not None and live:
        result = inventory.assign_devices(session, actor, server.name, live, now, partial=True)
        done = dict.fromkeys(result.assigned, f"assigned to {server.name}")
        done |= dict.fromkeys(result.unchanged, f"already assigned to {server.name}")
    elif activity_type == UNASSIGN and server is not None:
        failed |= {s: f"not assigned to {server.name}" for s in live if on[s] != server.id}
        if ours := [s for s in live if on[s] == server.id]:
            result = inventory.unassign_devices(session, actor, ours, now)
            done = dict.fromkeys(result.assigned, f"unassigned from {server.name}")
    elif activity_type == RELEASE and live:
        done = dict.fromkeys(inventory.release_devices(session, actor, live, now), "released")
    row = ApiActivity(
        id=str(uuid.uuid4()),
        account_id=caller.account_id,
        activity_type=activity_type,
        server_id=server.id if server else None,
        created_at=now,
        completed_at=now,
        sub_status=_sub_status(len(done), len(failed)),
        log_csv=_log(activity_type, server.name if server else "", done, failed),
    )
    session.add(row)
    return _view(row)


def _sub_status(succeeded: int, failed: int) -> str:
    if not failed:
        return "COMPLETED_WITH_SUCCESS"
    return "COMPLETED_WITH_FAILURE" if succeeded else "COMPLETED_WITH_ERROR"


def _log(kind: str, server: str, done: dict[str, str], failed: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LOG_HEADER)
    rows = [(s, "SUCCESS", d) for s, d in done.items()] + [
        (s, "FAILED", d) for s, d in failed.items()
    ]
    for serial, result, detail in sorted(rows):
        writer.writerow((serial, kind, server, result, detail))
    return out.getvalue()


def get_activity(session: Session, activity_id: str, now: datetime) -> ActivityView:
    """An activity of the last 30 days."""
    row = session.get(ApiActivity, activity_id[:36])
    if row is None or row.created_at < now - KEPT:
        raise NotFound(
            f"There is no resource of type 'orgDeviceActivities' with id '{activity_id[:64]}'"
        )
    return _view(row)


def activity_log(session: Session, activity_id: str, now: datetime) -> tuple[ActivityView, str]:
    """An activity with its CSV log."""
    view = get_activity(session, activity_id, now)
    row = session.get(ApiActivity, view.id)
    assert row is not None
    return view, row.log_csv


def log_signature(key: bytes, activity_id: str, expires: int) -> str:
    """The signature of a presigned log URL (HMAC-SHA256 over the id and expiry)."""
    mac = hmac.new(key, f"{activity_id}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def log_url_valid(
    key: bytes, activity_id: str, expires: str, signature: str, now: datetime
) -> bool:
    """Whether a presigned log URL is genuine and not yet expired."""
    if not expires.isdigit() or int(expires) < now.timestamp():
        return False
    return hmac.compare_digest(log_signature(key, activity_id, int(expires)), signature)
