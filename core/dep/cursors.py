"""Fetch and sync cursors: opaque to clients, signed so they cannot be forged or moved.

A cursor names its server, the change-log position a later sync continues from, and, while a
fetch is under way, the last serial number it returned (pages are keyset pages by serial).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.dep.errors import refused

VERSION = "1"
LIFETIME = timedelta(days=7)
MAX_LENGTH = 1000


@dataclass(frozen=True)
class Cursor:
    """A position for one server: `after` is the fetch's last serial, None once it is done."""

    server_id: int
    change_id: int
    issued_at: int
    after: str | None = None
    done: bool = False


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: bytes) -> str:
    return _b64(hmac.new(key, payload, hashlib.sha256).digest()[:18])


def encode(key: bytes, cursor: Cursor) -> str:
    """The cursor as an opaque, signed string."""
    fields = (
        VERSION,
        str(cursor.server_id),
        str(cursor.change_id),
        str(cursor.issued_at),
        "d" if cursor.done else "f",
        cursor.after or "",
    )
    payload = ":".join(fields).encode("ascii")
    return f"{_b64(payload)}.{_sign(key, payload)}"


def decode(key: bytes, text: object, server_id: int, now: datetime) -> Cursor:
    """The cursor a client sent back, checked: signature, server, then age (Apple: 7 days)."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH or not text.isascii():
        raise refused("INVALID_CURSOR")
    if text.count(".") != 1:
        raise refused("INVALID_CURSOR")
    body, signature = text.split(".")
    try:
        payload = _unb64(body)
        fields = payload.decode("ascii").split(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise refused("INVALID_CURSOR") from exc
    if not hmac.compare_digest(_sign(key, payload), signature) or len(fields) != 6:
        raise refused("INVALID_CURSOR")
    version, server, change, issued, state, after = fields
    if version != VERSION or int(server) != server_id:
        raise refused("INVALID_CURSOR")
    cursor = Cursor(int(server), int(change), int(issued), after or None, state == "d")
    if now.timestamp() - cursor.issued_at > LIFETIME.total_seconds():
        raise refused("EXPIRED_CURSOR")
    return cursor
