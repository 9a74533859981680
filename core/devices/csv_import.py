"""Importing devices from a CSV file: all rows or none, every bad row named by its line."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit
from core.devices.changelog import ADDED, MODIFIED, chunks, defaults, lock_servers
from core.devices.inventory import clean_serial, parse_family, parse_os
from core.errors import InvalidInput
from core.models import Device, DeviceChange, Server
from core.people.persons import authorize
from core.progress import Progress, Tally
from core.roles import Actor, Permission

REQUIRED = ("serial_number", "model", "description", "color", "device_family", "os")
OPTIONAL = ("asset_tag", "order_number")
DETAILS = ("model", "description", "color", "asset_tag", "device_family", "os", "order_number")
MAX_FIELD = 256
MAX_BYTES = 20 * 1024 * 1024
SHOWN_PROBLEMS = 50
BATCH = 1000
SEPARATORS = (",", ";", "\t")
# Unicode's bidirectional formatting characters (UAX #9): they reorder what a terminal shows.
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class ImportRefused(InvalidInput):
    """A CSV file with bad rows: nothing was imported; `problems` lists (line, reason)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        lines = [f"line {n}: {reason}" for n, reason in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"… and {len(problems) - SHOWN_PROBLEMS} more bad rows")
        super().__init__(
            f"Nothing was imported: {len(problems)} bad row(s).\n" + "\n".join(lines),
            field="file",
        )
        self.problems = problems


@dataclass
class ImportSummary:
    """What an import did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    released: int = 0
    to_default: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Rows in the file."""
        return self.created + self.updated + self.unchanged


def _names(row: list[str]) -> list[str]:
    return [cell.strip().lower().replace(" ", "_") for cell in row]


def _separator(first_line: str) -> str:
    """The separator the header row uses: the one that splits it into the most known columns."""
    known = set(REQUIRED + OPTIONAL)

    def found(separator: str) -> int:
        cells = next(csv.reader([first_line], delimiter=separator), [])
        return len(known.intersection(_names(cells)))

    return max(SEPARATORS, key=found)


def _header(row: list[str]) -> list[str]:
    names = _names(row)
    missing = [c for c in REQUIRED if c not in names]
    unknown = [c for c in names if c not in REQUIRED + OPTIONAL]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if len(set(names)) != len(names):
        problems.append("a column appears twice")
    if problems:
        raise ImportRefused([(1, "; ".join(problems) + f" (expected {', '.join(REQUIRED)})")])
    return names


def _row(names: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(names):
        raise InvalidInput(f"{len(cells)} values for {len(names)} columns")
    values = {n: c.strip() for n, c in zip(names, cells, strict=True)}
    long = [n for n, v in values.items() if len(v) > MAX_FIELD]
    if long:
        raise InvalidInput(f"{long[0]} is longer than {MAX_FIELD} characters")
    hidden = [n for n, v in values.items() if any(_hidden(c) for c in v)]
    if hidden:
        raise InvalidInput(f"{hidden[0]} holds a control or bidirectional formatting character")
    row: dict[str, Any] = {n: values.get(n, "") for n in REQUIRED}
    row |= {n: values.get(n) or None for n in OPTIONAL}
    row["serial_number"] = clean_serial(row["serial_number"])
    row["device_family"] = parse_family(row["device_family"])
    row["os"] = parse_os(row["os"])
    if row["device_family"] == "iPad" and row["os"] == "iOS":
        row["os"] = "iPadOS"  # Apple: iPads run iPadOS (the DEP Device object since protocol 7)
    return row


def _hidden(char: str) -> bool:
    """A character that changes how text shows rather than showing (controls, bidi marks)."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in BIDI


def parse_csv(content: bytes, progress: Progress | None = None) -> list[tuple[int, dict[str, Any]]]:
    """The file's rows with their line numbers, validated; any bad row refuses the whole file."""
    if len(content) > MAX_BYTES:
        raise InvalidInput(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("The file is not UTF-8 text; export it as CSV UTF-8.") from exc
    separator = _separator(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header = next(reader, None)
    if header is None:
        raise InvalidInput("The file is empty; it needs a header row and one row per device.")
    names = _header(header)
    lines = sum(1 for _ in io.StringIO(text, newline="")) if progress else 0
    tally = Tally(progress, "Reading the file", lines, "lines")
    tally.add(reader.line_num)
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    line = reader.line_num
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            tally.add(line - start + 1)
            if not any(c.strip() for c in cells):
                continue
            try:
                row = _row(names, cells)
            except InvalidInput as exc:
                problems.append((start, exc.message))
                continue
            if row["serial_number"] in seen:
                first = seen[row["serial_number"]]
                problems.append((start, f"{row['serial_number']} already on line {first}"))
                continue
            seen[row["serial_number"]] = start
            rows.append((start, row))
    except csv.Error as exc:
        problems.append((reader.line_num, f"not valid CSV ({exc})"))
    if problems:
        raise ImportRefused(problems)
    if not rows:
        raise InvalidInput("The file has a header but no devices.")
    return rows


def import_devices(
    session: Session,
    actor: Actor,
    content: bytes,
    now: datetime,
    *,
    source: str = "CSV",
    progress: Progress | None = None,
) -> ImportSummary:
    """Create or update the file's devices; unassigned ones go to their family's default."""
    authorize(session, actor, Permission.MANAGE_DEVICES)
    parsed = parse_csv(content, progress)
    by_serial = {row["serial_number"]: row for _, row in parsed}
    existing: dict[str, Device] = {}
    for part in chunks(list(by_serial)):
        query = select(Device).where(col(Device.serial_number).in_(part)).with_for_update()
        existing.update((d.serial_number, d) for d in session.exec(query))
    released = {s for s, d in existing.items() if d.released_at is not None}
    for serial in released:
        del by_serial[serial], existing[serial]
    targets = defaults(session)
    lock_servers(session, [*targets.values(), *(d.server_id for d in existing.values())])
    summary = ImportSummary(released=len(released))
    names = {int(i): n for i, n in session.exec(select(Server.id, Server.name)) if i is not None}
    writer = _Writer(actor, targets, now, summary, names)
    planned = [writer.update(existing[s], r) for s, r in by_serial.items() if s in existing]
    updates = [u for u in planned if u is not None]
    tally = Tally(progress, "Importing devices", len(by_serial), "devices")
    tally.add(summary.unchanged)
    for offset in range(0, len(updates), BATCH):
        part = updates[offset : offset + BATCH]
        session.execute(sa.update(Device), part)
        tally.add(len(part))
    new = [writer.new(r) for s, r in by_serial.items() if s not in existing]
    for offset in range(0, len(new), BATCH):
        batch = new[offset : offset + BATCH]
        ids = session.execute(
            sa.insert(Device).returning(col(Device.id), sort_by_parameter_order=True), batch
        ).scalars()
        for device_id, row in zip(ids, batch, strict=True):
            if row["server_id"] is not None:
                writer.logged(row["server_id"], device_id, ADDED)
        tally.add(len(batch))
    if writer.log:
        session.execute(sa.insert(DeviceChange), writer.log)
    summary.created = len(new)
    audit.record(
        session,
        actor,
        "devices.import",
        source,
        now,
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
        released=summary.released,
        to_default=dict(summary.to_default),
    )
    return summary


@dataclass
class _Writer:
    """Turns rows into bulk writes and the change-log entries each server can see."""

    actor: Actor
    targets: dict[str, int]
    now: datetime
    summary: ImportSummary
    names: dict[int, str]
    log: list[dict[str, Any]] = field(default_factory=list)

    def logged(self, server_id: int, device_id: int, op_type: str) -> None:
        """Remember one change-log entry."""
        self.log.append(
            {
                "server_id": server_id,
                "device_id": device_id,
                "op_type": op_type,
                "op_date": self.now,
            }
        )

    def _placement(self, row: dict[str, Any]) -> dict[str, Any]:
        target = self.targets.get(row["device_family"])
        if target is None:
            return {}
        self.summary.to_default[self.names[target]] += 1
        return {"server_id": target, "assigned_at": self.now, "assigned_by": self.actor.label}

    def new(self, row: dict[str, Any]) -> dict[str, Any]:
        """The insert of a device seen for the first time."""
        return (
            row
            | {
                "server_id": None,
                "assigned_at": None,
                "assigned_by": None,
                "profile_status": "empty",
                "imported_at": self.now,
            }
            | self._placement(row)
        )

    def update(self, device: Device, row: dict[str, Any]) -> dict[str, Any] | None:
        """The update of a known device, or None when nothing changes."""
        assert device.id is not None
        details = any(getattr(device, k) != row[k] for k in DETAILS)
        placement = self._placement(row) if device.server_id is None else {}
        if not details and not placement:
            self.summary.unchanged += 1
            return None
        self.summary.updated += 1
        if placement:
            self.logged(placement["server_id"], device.id, ADDED)
        elif device.server_id is not None:
            self.logged(device.server_id, device.id, MODIFIED)
        return {"id": device.id} | row | placement
