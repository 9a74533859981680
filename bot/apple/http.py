"""One call to Apple with a total deadline: 429 waits `Retry-After`, 5xx and broken connections
back off a bounded number of times; every failure becomes one core error (ASM-API.md §1.6, §7)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3

from core.apple.api import AppleMalformed, AppleUnreachable

MAX_BODY = 32 * 1024 * 1024
BACKOFF = 0.5  # seconds before the first retry of a 5xx; doubled each time
MAX_RETRIES = 4
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class Answer:
    """A response read in full: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; AppleMalformed if it is not."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise AppleMalformed(
                f"Apple answered something that is not JSON (HTTP {self.status})."
            ) from None


class Transport:
    """urllib3 with retries of its own turned off; `sleep` and `clock` are the process's."""

    def __init__(
        self,
        pool: urllib3.PoolManager | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool or urllib3.PoolManager(retries=False, maxsize=4)
        self.sleep = sleep
        self.clock = clock

    def call(
        self,
        method: str,
        url: str,
        deadline: float,
        *,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> Answer:
        """Send until Apple answers something other than 429/5xx, or the deadline passes."""
        failures = 0
        while True:
            left = deadline - self.clock()
            if left <= 0:
                raise AppleUnreachable("Apple did not answer in time; mdmbot will try again.")
            try:
                answer = self._send(method, url, headers, body, left)
            except urllib3.exceptions.HTTPError as exc:
                failures += 1
                why = f"Cannot reach Apple ({_reason(exc)})."
                if failures > MAX_RETRIES:
                    raise AppleUnreachable(why) from None
                self._wait(BACKOFF * 2 ** (failures - 1), deadline, why)
                continue
            if answer.status == 429:
                wait = _retry_after(answer.headers)
                self._wait(wait, deadline, "Apple keeps answering “Too Many Requests” (429).")
                continue
            if answer.status >= 500:
                failures += 1
                if failures > MAX_RETRIES:
                    raise AppleUnreachable(f"Apple keeps failing (HTTP {answer.status}).")
                self._wait(BACKOFF * 2 ** (failures - 1), deadline,
                           f"Apple keeps failing (HTTP {answer.status}).")  # fmt: skip
                continue
            return answer

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, left: float
    ) -> Answer:
        response = self.pool.request(
            method,
            url,
            headers=headers,
            body=body,
            timeout=urllib3.Timeout(total=left),
            redirect=False,
            preload_content=False,
        )
        try:
            raw = response.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                raise AppleMalformed("Apple's answer was larger than mdmbot reads.")
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, raw)
        finally:
            response.release_conn()

    def _wait(self, seconds: float, deadline: float, why: str) -> None:
        """Sleep before a retry, unless the deadline would pass first."""
        if self.clock() + seconds >= deadline:
            raise AppleUnreachable(f"{why} mdmbot will try again later.")
        self.sleep(seconds)


def _retry_after(headers: dict[str, str]) -> float:
    """Apple's `Retry-After` in seconds (ASM-API.md §7: an integer); 60 when absent or odd."""
    value = headers.get("retry-after") or headers.get("x-retry-after") or ""
    try:
        seconds = float(int(value.strip()))
    except ValueError:
        return 60.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).split(": ", 1)[-1].strip()
    return text[:120] or type(exc).__name__
