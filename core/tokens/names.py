"""Server names: Apple's naming rules, the comparison key and a file-name-safe form."""

from __future__ import annotations

import re
import unicodedata

from core.errors import InvalidName

MAX_NAME_LENGTH = 64
RESERVED_NAMES = ("Unassigned", "Reassigned")

_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})
_FALLBACK_FILENAME = "server"


def _fold(text: str) -> str:
    """Return the NFKC case-folded form of already cleaned text."""
    return unicodedata.normalize("NFKC", text.casefold())


_RESERVED_KEYS = frozenset(_fold(name) for name in RESERVED_NAMES)


def clean_name(raw: str) -> str:
    """Return the display form of a server name, or raise InvalidName if Apple would refuse it."""
    text = unicodedata.normalize("NFKC", raw)
    odd = next((c for c in text if unicodedata.category(c) in _CONTROL_CATEGORIES), None)
    if odd is not None and unicodedata.category(odd) == "Cc":
        raise InvalidName(
            "A server name can't contain control characters such as tabs or line breaks."
        )
    if odd is not None:
        raise InvalidName(
            f"A server name can't contain invisible or special characters; this one has "
            f"U+{ord(odd):04X} ({unicodedata.name(odd, 'unnamed').lower()})."
        )
    cleaned = " ".join(text.split())
    if not cleaned:
        raise InvalidName("Enter a server name.")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"A server name can have at most {MAX_NAME_LENGTH} characters; "
            f"this one has {len(cleaned)}."
        )
    if _fold(cleaned) in _RESERVED_KEYS:
        reserved = next(name for name in RESERVED_NAMES if _fold(name) == _fold(cleaned))
        raise InvalidName(f"A server name can't be “{reserved}”: Apple reserves it.")
    return cleaned


def normalize_name(raw: str) -> str:
    """Return the key two names are compared by (NFKC, trimmed, collapsed, case-folded)."""
    return _fold(clean_name(raw))


def safe_filename(name: str) -> str:
    """Return the name reduced to ASCII letters, digits, '-', '_' and '.' for use in a file name."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_text = "".join(char for char in decomposed if not unicodedata.combining(char))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    safe = re.sub(r"_{2,}", "_", safe)
    safe = re.sub(r"\.{2,}", ".", safe)
    safe = safe.strip("._-")[:MAX_NAME_LENGTH].strip("._-")
    return safe or _FALLBACK_FILENAME
