"""Fetch a private Slack file with the bot token, within Slack's 3-second acknowledgement."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

log = logging.getLogger("mdmbot.slack")

DEADLINE = 2.0  # Slack: the modal submission must be acknowledged within 3 seconds
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DownloadFailed(Exception):
    """The file could not be fetched; `reason` says why in words for a log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooSlow(DownloadFailed):
    """The deadline passed before the file arrived."""

    def __init__(self) -> None:
        super().__init__("took too long")


@dataclass(frozen=True)
class Fetched:
    """A downloaded body and its content type."""

    content_type: str
    body: bytes


def next_hop(
    current: str, location: str, headers: dict[str, str], trusted: Callable[[str], bool]
) -> tuple[str, dict[str, str]]:
    """Where a redirect leads (trusted hosts only) and its headers (the token stays on its host)."""
    target = urljoin(current, location)
    if not trusted(target):
        raise DownloadFailed(f"redirected to an untrusted host {urlsplit(target).hostname}")
    if _origin(target) != _origin(current):
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return target, headers


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def fetch(
    url: str,
    token: str,
    limit: int,
    trusted: Callable[[str], bool],
    *,
    deadline: float = DEADLINE,
) -> Fetched:
    """GET `url` with the token: ≤ `limit` + 1 bytes, every hop checked, all within `deadline`."""
    stop_at = time.monotonic() + deadline
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(MAX_REDIRECTS + 1):
        status, location, fetched = _get(url, headers, limit, stop_at)
        if status not in _REDIRECTS:
            if status != 200:
                raise DownloadFailed(f"HTTP {status}")
            return fetched
        if not location:
            raise DownloadFailed(f"HTTP {status} without a Location")
        url, headers = next_hop(url, location, headers, trusted)
    raise DownloadFailed("too many redirects")


def _get(
    url: str, headers: dict[str, str], limit: int, stop_at: float
) -> tuple[int, str | None, Fetched]:
    """One request; a watchdog shuts the socket at `stop_at` so a slow drip cannot hold it."""
    parts = urlsplit(url)
    remaining = stop_at - time.monotonic()
    if remaining <= 0:
        raise TooSlow()
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=remaining)
    expired = threading.Event()
    opened: list[socket.socket] = []

    def cut() -> None:
        expired.set()
        for sock in opened:  # the response keeps reading from it after conn lets go of it
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(remaining, cut)
    watchdog.daemon = True
    watchdog.start()
    response: http.client.HTTPResponse | None = None
    try:
        conn.connect()
        opened.append(conn.sock)
        if expired.is_set():
            raise TooSlow()
        path = parts.path or "/"
        conn.request("GET", f"{path}?{parts.query}" if parts.query else path, headers=headers)
        response = conn.getresponse()
        body = b""
        if response.status == 200:
            while len(body) <= limit:
                chunk = response.read1(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if expired.is_set():  # the watchdog cut the body short
            raise TooSlow()
        fetched = Fetched(str(response.headers.get("Content-Type", "")), body)
        return response.status, response.headers.get("Location"), fetched
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TooSlow() from exc
        raise DownloadFailed(type(exc).__name__) from exc
    finally:
        watchdog.cancel()
        if response is not None:
            response.close()
        conn.close()
