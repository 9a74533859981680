"""One expiry-alert sweep (`core.people.alerts.claim_due_alerts`) over 1k to 100k active tokens.

Each database is filled in bulk with SQLAlchemy core inserts (one server and certificate per
token), in the steady state that hourly sweeps leave behind: every token within the largest
threshold has its past alerts recorded in AlertDelivery and `next_alert_at` set to when its next
window opens; tokens further out were never examined (`next_alert_at` NULL). "Nothing due" is
that state as of the sweep time. "1% due" moves every hundredth token so that one threshold
window (60, 30, 14, 7, 3, 1 days or expiry, in turn) opened half an hour ago, after the
previous sweep. The baseline is the naive design: read every active token and evaluate
`core.people.lifecycle.due_threshold` on each (no claims written).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from bench.common import Row, Section, median, ms
from core import db
from core.people import alerts
from core.people.lifecycle import DAY, due_threshold, next_check_at, thresholds, window_opens
from core.settings import DEFAULT_ALERT_DAYS

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
SIZES = (1_000, 10_000, 100_000)
DUE_EVERY = 100
TARGET_SECONDS = 0.5
PEM = "-----BEGIN CERTIFICATE-----\nMIIBbench\n-----END CERTIFICATE-----\n"
SECRETS = "gAAAAA" + "b" * 294  # the size of a vault-encrypted credentials blob
GOLDEN = 0.6180339887498949
_BATCH = 10_000


@dataclass(frozen=True)
class Timing:
    """Sweep timings of one database."""

    tokens: int
    due: int
    seconds: list[float]
    build_seconds: float


def token_state(expires_at: datetime, as_of: datetime) -> tuple[list[int], datetime | None]:
    """Thresholds already alerted and `next_alert_at` after hourly sweeps up to `as_of`."""
    days = DEFAULT_ALERT_DAYS
    if expires_at > as_of + max(thresholds(days)) * DAY:
        return [], None
    claimed = [t for t in thresholds(days) if as_of >= window_opens(expires_at, t)]
    following = next_check_at(expires_at, min(claimed) if claimed else None, days)
    return claimed, following or alerts.NEVER


def plan(index: int, with_due: bool) -> tuple[datetime, datetime]:
    """(expires_at, state as of) for token `index`."""
    if with_due and index % DUE_EVERY == 0:
        ladder = thresholds(DEFAULT_ALERT_DAYS)
        threshold = ladder[(index // DUE_EVERY) % len(ladder)]
        return NOW + threshold * DAY - timedelta(minutes=30), NOW - timedelta(hours=1)
    spread = (index * GOLDEN) % 1.0
    return NOW + timedelta(hours=1) + spread * timedelta(days=364), NOW


def rows(count: int, with_due: bool) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Batches of rows for the server, certificate, token and alertdelivery tables."""
    for start in range(1, count + 1, _BATCH):
        batch: dict[str, list[dict[str, Any]]] = {
            "server": [], "certificate": [], "token": [], "alertdelivery": []
        }
        for i in range(start, min(start + _BATCH, count + 1)):
            expires_at, as_of = plan(i, with_due)
            issued_at = expires_at - timedelta(days=365)
            claimed, following = token_state(expires_at, as_of)
            batch["server"].append({
                "id": i, "name": f"Server {i}", "normalized_name": f"server {i}",
                "release_devices": True, "created_by": "UBENCH", "created_at": issued_at,
            })
            batch["certificate"].append({
                "id": i, "server_id": i, "pem": PEM, "fingerprint_sha256": f"{i:064x}",
                "subject": "CN=mdm.bench.example", "not_after": expires_at + DAY * 365,
                "uploaded_by": "UBENCH", "uploaded_at": issued_at, "active": True,
            })
            batch["token"].append({
                "id": i, "server_id": i, "certificate_id": i, "consumer_key": f"CK_{i:096x}",
                "secrets": SECRETS, "issued_at": issued_at, "expires_at": expires_at,
                "downloaded_by": f"U{i % 40:08d}", "status": "active", "next_alert_at": following,
            })
            for threshold in claimed:
                sent = window_opens(expires_at, threshold)
                batch["alertdelivery"].append({
                    "token_id": i, "kind": alerts.KIND, "threshold": threshold,
                    "status": "sent", "claimed_at": sent, "sent_at": sent, "attempts": 1,
                    "channel": "C0ALERTS", "ts": f"{i}.{threshold:06d}",
                })
        yield batch


def build(path: Path, count: int, with_due: bool) -> float:
    """Create and fill a migrated SQLite database; return the seconds it took."""
    started = time.perf_counter()
    url = f"sqlite:///{path}"
    db.upgrade(url)
    engine = db.make_engine(url)
    tables = SQLModel.metadata.tables
    with engine.begin() as conn:
        for batch in rows(count, with_due):
            for name in ("server", "certificate", "token", "alertdelivery"):
                if batch[name]:
                    conn.execute(tables[name].insert(), batch[name])
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def sweep_once(base: Path, scratch: Path) -> tuple[float, int]:
    """Copy the database, run one sweep as of NOW (committed) and return (seconds, claimed)."""
    shutil.copyfile(base, scratch)
    engine = db.make_engine(f"sqlite:///{scratch}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        started = time.perf_counter()
        with db.unit_of_work(engine) as session:
            due = alerts.claim_due_alerts(session, NOW, DEFAULT_ALERT_DAYS)
        return time.perf_counter() - started, len(due)
    finally:
        engine.dispose()


def naive_scan(base: Path) -> float:
    """The baseline: read every active token and evaluate due_threshold on each."""
    engine = db.make_engine(f"sqlite:///{base}")
    token = SQLModel.metadata.tables["token"]
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            started = time.perf_counter()
            found = 0
            query = sa.select(token.c.id, token.c.expires_at).where(token.c.status == "active")
            for _, expires_at in conn.execute(query):
                if due_threshold(expires_at, NOW, DEFAULT_ALERT_DAYS) is not None:
                    found += 1
            return time.perf_counter() - started
    finally:
        engine.dispose()


def run(quick: bool) -> Section:
    """Time sweeps at each size, with nothing due and with 1% due."""
    repeats = 2 if quick else 5
    section = Section("Expiry sweep (`core.people.alerts.claim_due_alerts`, SQLite)")
    results: dict[tuple[int, bool], Timing] = {}
    baselines: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="mdmbot-bench-sweep-") as tmp:
        scratch = Path(tmp) / "scratch.db"
        for count in SIZES:
            for with_due in (False, True):
                base = Path(tmp) / f"tokens-{count}-{'due' if with_due else 'none'}.db"
                built = build(base, count, with_due)
                runs = [sweep_once(base, scratch) for _ in range(repeats)]
                expected = count // DUE_EVERY if with_due else 0
                claimed = {n for _, n in runs}
                if claimed != {expected}:
                    raise RuntimeError(f"{count} tokens: claimed {claimed}, expected {expected}")
                results[(count, with_due)] = Timing(count, expected, [s for s, _ in runs], built)
                if not with_due:
                    baselines[count] = median([naive_scan(base) for _ in range(repeats)])
                base.unlink()
    _report(section, results, baselines, repeats)
    return section


def _report(
    section: Section,
    results: dict[tuple[int, bool], Timing],
    baselines: dict[int, float],
    repeats: int,
) -> None:
    """Turn the timings into table rows and detail lines."""
    small, large = SIZES[0], SIZES[-1]
    idle = {n: median(results[(n, False)].seconds) for n in SIZES}
    busy = {n: median(results[(n, True)].seconds) for n in SIZES}
    per_due = {n: (busy[n] - idle[n]) / max(1, n // DUE_EVERY) for n in SIZES}
    for count in SIZES:
        met = idle[count] < TARGET_SECONDS if count == large else None
        section.rows.append(
            Row(
                f"sweep, {count:,} tokens, nothing due",
                ms(idle[count]),
                f"naive full scan: {ms(baselines[count])}",
                f"< {TARGET_SECONDS} s at {large:,}" if count == large else "—",
                met,
            )
        )
    for count in SIZES:
        section.rows.append(
            Row(
                f"sweep, {count:,} tokens, 1% due ({count // DUE_EVERY:,} claimed)",
                f"{ms(busy[count])} ({per_due[count] * 1000:.2f} ms per due token)",
                f"nothing due: {ms(idle[count])}",
                "—",
                None,
            )
        )
    # Cost grows with the number due, not the total: 100x more tokens adds little when nothing
    # is due, and the extra cost of the due tokens stays about the same per due token (compared
    # between the two larger sizes, where the fixed cost of a sweep no longer dominates).
    middle = SIZES[-2]
    growth = idle[large] - idle[small]
    flat = growth < 0.1 * (busy[large] - idle[large])
    steady = per_due[large] <= 2 * per_due[middle] and per_due[middle] <= 2 * per_due[large]
    section.rows.append(
        Row(
            "sweep cost grows with the number due, not the total",
            f"nothing due, {small:,}→{large:,} tokens: {growth * 1000:+.1f} ms; "
            f"per due token at {middle:,} / {large:,}: "
            f"{per_due[middle] * 1000:.2f} / {per_due[large] * 1000:.2f} ms",
            f"1% due at {large:,}: +{ms(busy[large] - idle[large])} over nothing due",
            f"growth < 10% of the due work at {large:,}; per-due cost within 2×",
            flat and steady,
        )
    )
    for (count, with_due), timing in sorted(results.items()):
        section.details.append(
            f"{count:,} tokens, {'1% due' if with_due else 'nothing due'}: "
            f"{', '.join(ms(s) for s in timing.seconds)} over {repeats} runs "
            f"(database built in {timing.build_seconds:.1f} s)"
        )
