"""Work an app queued behind requests it already answered, which its listener waits on.

A slash command is acked at once and its modal opened afterwards; if the front kept taking new
commands while that work queued, the acks would stay fast while the modals fell behind Slack's
3 s `trigger_id` window. With a backlog on its listener, the next request waits before its app
while `limit` jobs are queued or running (`bot.http.guard`), so acks and modals slow down
together. A job that has run `lapse` seconds no longer counts: it is waiting on Slack's answer,
not on this process, and a slow Slack must not stop the listener.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Backlog:
    """A thread pool for after-answer work that counts what is queued or running in it."""

    def __init__(self, limit: int, threads: int, name: str, lapse: float = 0.05) -> None:
        self.limit = limit
        self.lapse = lapse
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._started: dict[int, float] = {}  # running jobs: thread id -> when it started

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def full(self) -> bool:
        """Whether the listener should take no new request until a job finishes or lapses."""
        if self._pending < self.limit:
            return False
        since = time.monotonic() - self.lapse
        lapsed = sum(1 for started in list(self._started.values()) if started < since)
        return self._pending - lapsed >= self.limit

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run `fn(*args)` on the pool, counted until it returns or raises."""
        with self._lock:
            self._pending += 1
        try:
            return self.pool.submit(self._run, fn, args)
        except BaseException:
            self._finished()
            raise

    def shutdown(self, wait: bool = True) -> None:
        """Finish (or, without `wait`, abandon) the queued jobs and stop the threads."""
        self.pool.shutdown(wait=wait, cancel_futures=not wait)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        me = threading.get_ident()
        self._started[me] = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._started.pop(me, None)
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1
