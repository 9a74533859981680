"""Cursors are opaque, signed, bound to one server and expire after 7 days."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.dep import cursors
from core.dep.auth import DepError

KEY = b"s" * 32


def code(text: object, server_id: int, now: datetime, key: bytes = KEY) -> str:
    with pytest.raises(DepError) as caught:
        cursors.decode(key, text, server_id, now)
    return caught.value.code


def test_a_cursor_round_trips_for_its_server(now: datetime) -> None:
    cursor = cursors.Cursor(7, 1234, int(now.timestamp()), "C02XK0ABCDEF")
    text = cursors.encode(KEY, cursor)
    assert len(text) <= cursors.MAX_LENGTH and "C02XK0ABCDEF" not in text
    assert cursors.decode(KEY, text, 7, now + timedelta(days=7)) == cursor
    done = cursors.Cursor(7, 1234, int(now.timestamp()), None, done=True)
    assert cursors.decode(KEY, cursors.encode(KEY, done), 7, now) == done


def test_forged_foreign_and_old_cursors_are_refused(now: datetime) -> None:
    text = cursors.encode(KEY, cursors.Cursor(7, 10, int(now.timestamp())))
    body, signature = text.split(".")
    moved = cursors.encode(b"x" * 32, cursors.Cursor(8, 10, int(now.timestamp())))
    assert code(text, 8, now) == "INVALID_CURSOR"
    assert code(moved, 8, now) == "INVALID_CURSOR"
    assert code(text, 7, now, key=b"x" * 32) == "INVALID_CURSOR"
    assert code(body + "." + signature[::-1], 7, now) == "INVALID_CURSOR"
    assert code(body[:-1] + "A." + signature, 7, now) == "INVALID_CURSOR"
    for junk in ("", "abc", "a.b.c", "é.x", 17, None, "x" * 2000):
        assert code(junk, 7, now) == "INVALID_CURSOR", junk
    assert code(text, 7, now + timedelta(days=7, seconds=1)) == "EXPIRED_CURSOR"
