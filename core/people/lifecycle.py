"""Pure lifecycle rules (DESIGN.md §7): which expiry alert is due, and when to look again.

A threshold of `d` days is a window that opens at `expires_at - d days` and stays open, so a late
sweep still sends it. When several windows are open at once only the most urgent (smallest)
threshold is due, and once a threshold is claimed nothing less urgent is ever due again. That lets
a sweep store "when to look next" per token and examine each token at most once per reminder.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

AT_EXPIRY = 0
DAY = timedelta(days=1)


def thresholds(alert_days: Sequence[int]) -> tuple[int, ...]:
    """The alert thresholds in days, most distant first, ending with AT_EXPIRY (0)."""
    days = {int(d) for d in alert_days}
    if any(d < 0 for d in days):
        raise ValueError("alert days must not be negative")
    return tuple(sorted(days | {AT_EXPIRY}, reverse=True))


def window_opens(expires_at: datetime, threshold: int) -> datetime:
    """When the alert window for `threshold` days before expiry opens."""
    return expires_at - threshold * DAY


def due_threshold(
    expires_at: datetime,
    now: datetime,
    alert_days: Sequence[int],
    already: Collection[int] = (),
) -> int | None:
    """The most urgent open threshold not yet covered by a claimed one (None: nothing due)."""
    opened = [t for t in thresholds(alert_days) if now >= window_opens(expires_at, t)]
    if not opened:
        return None
    candidate = min(opened)
    if already and min(already) <= candidate:
        return None
    return candidate


def next_check_at(
    expires_at: datetime, claimed: int | None, alert_days: Sequence[int]
) -> datetime | None:
    """When the next threshold more urgent than `claimed` opens (None once 0 is claimed)."""
    left = [t for t in thresholds(alert_days) if claimed is None or t < claimed]
    if not left:
        return None
    return window_opens(expires_at, max(left))


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded down (negative once expired)."""
    return (expires_at - now) // DAY
