"""Text sealed with an HMAC so that what comes back is exactly what was sent out."""

from __future__ import annotations

import hashlib
import hmac

from core.errors import InvalidInput

SEPARATOR = "."
STALE = "This dialog could not be verified; close it and open it again."


def seal(key: bytes, text: str) -> str:
    """`MAC.TEXT`: the text behind its HMAC-SHA256 (hex, 32 characters)."""
    return _mac(key, text) + SEPARATOR + text


def unseal(key: bytes, sealed: str) -> str:
    """The text `seal` sealed; InvalidInput when it was altered, forged or never sealed."""
    mac, _, text = sealed.partition(SEPARATOR)
    if not hmac.compare_digest(mac.encode(), _mac(key, text).encode()):
        raise InvalidInput(STALE)
    return text


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
