"""Work an app queued behind requests it already answered, which its listener waits on.

A slash command is acked at once and its modal opened afterwards; if the front kept taking new
commands while that work queued, the acks would stay fast while the modals fell behind Slack's
3 s `trigger_id` window. With a backlog on its listener, the next request waits before its app
while `limit` jobs are queued or running (`bot.http.guard`), so acks and modals slow down
together. A job that has run `lapse` seconds no longer counts: it is waiting on Slack's answer,
not on this process, and a slow Slack must not stop the listener.

A listener served by several worker processes shares one backlog between them (`share`, before
they fork): `limit` jobs per worker in all, and a request lets one that came more than `SLACK`
before it, at another worker, go first. With a gate per worker, a closed loop of clients spread
at random over two workers drifts to any split, since the busier worker answers no faster, and a
request waited in proportion to its worker's share: 1 to 16 of 16 in flight, measured
(bench/README.md, issue 35). Each worker writes only its own slot of a shared page: its jobs, its
oldest request held back and when it wrote; a slot not written for `lapse` seconds (its worker
gone, or waiting on Slack) does not count.
"""

from __future__ import annotations

import math
import mmap
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

SLOT = struct.Struct("ddd")  # jobs queued or running, oldest request held back, when written
SLACK = 0.008  # seconds a request held back may have come after another worker's and go first


class Backlog:
    """A thread pool for after-answer work that counts what is queued or running in it."""

    def __init__(self, limit: int, threads: int, name: str, lapse: float = 0.05) -> None:
        self.limit = limit
        self.lapse = lapse
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._started: dict[int, float] = {}  # running jobs: thread id -> when it started
        self._slots: mmap.mmap | None = None  # one per worker process, once shared
        self._workers = 1
        self._me = 0
        self._oldest = math.inf

    @property
    def pending(self) -> int:
        """Jobs queued or running in this process."""
        return self._pending

    def share(self, workers: int) -> None:
        """One backlog for `workers` processes about to be forked (`limit` jobs each in all)."""
        if self._slots is not None:
            raise RuntimeError("this backlog is shared already")
        self._slots = mmap.mmap(-1, SLOT.size * workers)
        self._workers = workers
        for index in range(workers):
            SLOT.pack_into(self._slots, index * SLOT.size, 0.0, math.inf, 0.0)

    def join(self, index: int) -> None:
        """In worker `index` (from 0) of a shared backlog: its slot, afresh."""
        if self._slots is None:
            return
        self._me = index
        with self._lock:
            self._pending = 0
            self._started.clear()
            self._oldest = math.inf
            self._write()

    def waiting_since(self, oldest: float) -> None:
        """This worker's oldest request held back (`time.monotonic()`; inf: none)."""
        with self._lock:
            self._oldest = oldest
            self._write()

    def full(self) -> bool:
        """Whether the listener should take no new request until a job finishes or lapses."""
        others = sum(pending for pending, _ in self._others())
        limit = self.limit * self._workers
        if self._pending + others < limit:
            return False
        since = time.monotonic() - self.lapse
        lapsed = sum(1 for started in list(self._started.values()) if started < since)
        return self._pending - lapsed + others >= limit

    def older_elsewhere(self, arrived: float) -> bool:
        """Whether another worker holds back a request that came more than `SLACK` before one
        that came at `arrived` (it goes first)."""
        return any(oldest < arrived - SLACK for _, oldest in self._others())

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run `fn(*args)` on the pool, counted until it returns or raises."""
        with self._lock:
            self._pending += 1
            self._write()
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
            self._write()

    def _write(self) -> None:
        if self._slots is not None:
            at = self._me * SLOT.size
            SLOT.pack_into(self._slots, at, self._pending, self._oldest, time.monotonic())

    def _others(self) -> list[tuple[float, float]]:
        """The other workers' slots written within `lapse`: (jobs, oldest request held back)."""
        if self._slots is None:
            return []
        fresh = time.monotonic() - self.lapse
        out = []
        for index in range(self._workers):
            pending, oldest, written = SLOT.unpack_from(self._slots, index * SLOT.size)
            if index != self._me and written > fresh:
                out.append((pending, oldest))
        return out
