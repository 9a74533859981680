"""Which expiry alert is due at a given time (pure; the time is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.people.lifecycle import (
    AT_EXPIRY,
    days_left,
    due_threshold,
    next_check_at,
    thresholds,
    window_opens,
)

DAYS = (60, 30, 14, 7, 3, 1)
EXPIRES = datetime(2027, 11, 27, 14, 3, 34, tzinfo=UTC)
D = timedelta(days=1)
S = timedelta(seconds=1)


def test_thresholds_sorted_descending_with_expiry() -> None:
    assert thresholds(DAYS) == (60, 30, 14, 7, 3, 1, 0)
    assert thresholds([1, 7, 7, 3]) == (7, 3, 1, 0)
    assert thresholds([]) == (AT_EXPIRY,)
    assert thresholds([0, 5]) == (5, 0)
    with pytest.raises(ValueError):
        thresholds([-1])


@pytest.mark.parametrize(
    ("before_expiry", "expected"),
    [
        (365 * D, None),
        (60 * D + S, None),
        (60 * D, 60),
        (45 * D, 60),
        (30 * D + S, 60),
        (30 * D, 30),
        (14 * D, 14),
        (8 * D, 14),
        (7 * D, 7),
        (3 * D, 3),
        (2 * D, 3),  # late first sweep: the 3-day window is the most urgent one open
        (1 * D, 1),
        (S, 1),
        (timedelta(0), 0),
        (-S, 0),
        (-400 * D, 0),
    ],
)
def test_due_with_nothing_sent(before_expiry: timedelta, expected: int | None) -> None:
    assert due_threshold(EXPIRES, EXPIRES - before_expiry, DAYS) == expected


def test_several_due_at_once_gives_only_the_most_urgent() -> None:
    assert due_threshold(EXPIRES, EXPIRES - 5 * D, DAYS) == 7
    assert due_threshold(EXPIRES, EXPIRES + D, DAYS) == 0


def test_already_sent_same_or_more_urgent_means_nothing_due() -> None:
    now = EXPIRES - 10 * D
    assert due_threshold(EXPIRES, now, DAYS, {60, 30, 14}) is None
    assert due_threshold(EXPIRES, now, DAYS, {7}) is None  # sent early; 14 is never sent after
    assert due_threshold(EXPIRES, now, DAYS, {60}) == 14
    assert due_threshold(EXPIRES, EXPIRES, DAYS, {1}) == 0
    assert due_threshold(EXPIRES, EXPIRES, DAYS, {0}) is None


def test_skipped_thresholds_are_never_sent_later() -> None:
    assert due_threshold(EXPIRES, EXPIRES - 2 * D, DAYS) == 3
    assert due_threshold(EXPIRES, EXPIRES - 2 * D + S, DAYS, {3}) is None
    assert due_threshold(EXPIRES, EXPIRES - D, DAYS, {3}) == 1


def test_next_check_at_is_the_next_window() -> None:
    assert next_check_at(EXPIRES, None, DAYS) == EXPIRES - 60 * D
    assert next_check_at(EXPIRES, 60, DAYS) == EXPIRES - 30 * D
    assert next_check_at(EXPIRES, 3, DAYS) == EXPIRES - D
    assert next_check_at(EXPIRES, 1, DAYS) == EXPIRES
    assert next_check_at(EXPIRES, 0, DAYS) is None
    assert next_check_at(EXPIRES, None, []) == EXPIRES


def test_next_check_matches_due_threshold_daily() -> None:
    """Walking the next_check_at chain finds exactly the thresholds a daily sweep would."""
    claimed: list[int] = []
    now = EXPIRES - 70 * D
    while now <= EXPIRES + 5 * D:
        due = due_threshold(EXPIRES, now, DAYS, claimed)
        if due is not None:
            claimed.append(due)
            after = next_check_at(EXPIRES, due, DAYS)
            assert after is None or after > now
        now += D
    assert claimed == [60, 30, 14, 7, 3, 1, 0]


def test_leap_day() -> None:
    expires = datetime(2028, 3, 1, 9, 0, tzinfo=UTC)
    assert window_opens(expires, 1) == datetime(2028, 2, 29, 9, 0, tzinfo=UTC)
    assert due_threshold(expires, datetime(2028, 2, 29, 8, 59, tzinfo=UTC), DAYS) == 3
    assert due_threshold(expires, datetime(2028, 2, 29, 9, 0, tzinfo=UTC), DAYS) == 1
    feb29 = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)
    assert window_opens(feb29, 7) == datetime(2028, 2, 22, 12, 0, tzinfo=UTC)
    assert due_threshold(feb29, datetime(2027, 12, 31, 12, 0, tzinfo=UTC), DAYS) == 60


def test_other_time_zones_compare_as_instants() -> None:
    from zoneinfo import ZoneInfo

    local = (EXPIRES - 7 * D).astimezone(ZoneInfo("America/New_York"))
    assert due_threshold(EXPIRES, local, DAYS) == 7


def test_days_left() -> None:
    assert days_left(EXPIRES, EXPIRES - 7 * D) == 7
    assert days_left(EXPIRES, EXPIRES - 7 * D + S) == 6
    assert days_left(EXPIRES, EXPIRES + S) == -1
