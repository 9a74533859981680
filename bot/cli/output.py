"""What the command line prints and reads: plain text for a terminal, regular files only."""

from __future__ import annotations

import os
import re
import stat
import sys
import unicodedata
from datetime import datetime

from core.errors import InvalidInput

_MENTION = re.compile(r"<[@#!]([A-Za-z0-9]+)(?:\|[^>]*)?>")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def plain(text: str) -> str:
    """A message for the terminal: Slack mentions as plain ids, control characters escaped."""
    return safe(_MENTION.sub(r"\1", text))


def when(value: datetime | None) -> str:
    """A time as the command line shows it."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def count(number: int, noun: str) -> str:
    """`1 device`, `2 devices`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def safe(text: str) -> str:
    """`text` with control and bidirectional characters shown as escapes, never interpreted."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if (unicodedata.category(char) in ("Cc", "Zl", "Zp") and char != "\n") or char in _BIDI
        else char
        for char in text
    )


def read_file(path: str, limit: int, too_big: str) -> bytes:
    """A regular file's bytes, refusing anything else (a FIFO, a device) and reading at most
    `limit` bytes."""
    try:
        with open(path, "rb", opener=_no_block) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InvalidInput(f"{path} is not a regular file.")
            content = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if len(content) > limit:
        raise InvalidInput(too_big)
    return content


def _no_block(path: str, flags: int) -> int:
    """Open without waiting for a FIFO's writer (it is refused once open)."""
    return os.open(path, flags | os.O_NONBLOCK)


def confirmed(question: str, *, yes: bool) -> bool:
    """Ask at a terminal (unless --yes); without one, act (the summary printed after says what
    happened)."""
    if yes or not sys.stdin.isatty():
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")
