"""A backlog shared by worker processes: what another worker's slot counts for, and how long."""

from __future__ import annotations

import os
import threading
import time

from bot.http.backlog import SLACK, Backlog


def in_another_worker(backlog: Backlog, jobs: int, waiting_since: float) -> None:
    """A forked worker 1 that queues `jobs` jobs and holds a request back, then vanishes."""
    pid = os.fork()
    if pid == 0:
        try:
            backlog.join(1)
            release = threading.Event()
            for _ in range(jobs):
                backlog.submit(release.wait)
            backlog.waiting_since(waiting_since)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_another_workers_jobs_and_older_request_count_until_its_slot_lapses() -> None:
    backlog = Backlog(limit=1, threads=2, name="shared-test", lapse=0.3)
    backlog.share(2)
    backlog.join(0)
    now = time.monotonic()
    in_another_worker(backlog, jobs=2, waiting_since=now - 1.0)
    assert backlog.full()  # two jobs, the limit of two workers
    assert backlog.older_elsewhere(now)
    assert not backlog.older_elsewhere(now - 1.0 + SLACK / 2)  # within the slack
    time.sleep(0.35)  # the other worker wrote nothing since: gone, or waiting on Slack
    assert not backlog.full()
    assert not backlog.older_elsewhere(time.monotonic())
    backlog.shutdown()


def test_a_worker_that_joins_again_starts_its_slot_afresh() -> None:
    backlog = Backlog(limit=1, threads=2, name="shared-test", lapse=60.0)
    backlog.share(2)
    backlog.join(0)
    in_another_worker(backlog, jobs=2, waiting_since=time.monotonic() - 1.0)
    assert backlog.full() and backlog.older_elsewhere(time.monotonic())
    pid = os.fork()
    if pid == 0:  # its replacement
        backlog.join(1)
        os._exit(0)
    os.waitpid(pid, 0)
    assert not backlog.full() and not backlog.older_elsewhere(time.monotonic())
    backlog.shutdown()


def test_a_backlog_of_one_process_counts_its_own_jobs_only() -> None:
    backlog = Backlog(limit=2, threads=2, name="alone-test")
    backlog.join(0)
    release = threading.Event()
    backlog.submit(release.wait)
    assert not backlog.full() and not backlog.older_elsewhere(time.monotonic())
    backlog.submit(release.wait)
    assert backlog.full()
    release.set()
    backlog.shutdown()
    assert not backlog.full() and backlog.pending == 0
