"""APScheduler 3.11 jobs: a lease heartbeat, and sweeps while this process holds the lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from bot import metrics
from bot.context import AppContext
from core import lease

log = logging.getLogger("mdmbot.scheduler")

SCHEDULER_LEASE = lease.SCHEDULER

SweepFn = Callable[[datetime, str], object]


class Scheduler:
    """APScheduler 3.11 jobs; only the holder of the scheduler lease sweeps."""

    def __init__(
        self,
        ctx: AppContext,
        sweep: SweepFn,
        holder: str,
        *,
        sweep_minutes: float,
        lease_seconds: float = 60.0,
    ) -> None:
        self.ctx = ctx
        self.sweep = sweep
        self.holder = holder
        self.ttl = timedelta(seconds=lease_seconds)
        self.sweep_minutes = sweep_minutes
        self.leader = False
        self.last_sweep: datetime | None = None
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone="UTC")

    def start(self) -> None:
        """Start the heartbeat (which sweeps at once when it takes the lease) and the sweeps."""
        now = self.ctx.now()
        self._scheduler.add_job(
            self.heartbeat,
            "interval",
            seconds=max(1.0, self.ttl.total_seconds() / 3),
            next_run_time=now,
            id="heartbeat",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.add_job(
            self.sweep_if_leader,
            "interval",
            minutes=self.sweep_minutes,
            id="sweep",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()

    def stop(self) -> None:
        """Stop the jobs, waiting for a running sweep, and hand the lease back."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        with self.ctx.unit_of_work() as session:
            lease.release(session, SCHEDULER_LEASE, self.holder)
        self.leader = False
        metrics.scheduler_leader.set(0)

    def heartbeat(self) -> None:
        """Take or renew the lease; a new leader sweeps straight away."""
        ctx = self.ctx
        try:
            with ctx.unit_of_work() as session:
                held = lease.acquire(session, SCHEDULER_LEASE, self.holder, ctx.now(), self.ttl)
        except Exception:
            log.exception("lease heartbeat failed")
            held = False
        took_over, self.leader = held and not self.leader, held
        metrics.scheduler_leader.set(1 if held else 0)
        if took_over:
            log.info("%s holds the scheduler lease", self.holder)
            self.sweep_if_leader()

    def sweep_if_leader(self) -> None:
        """Run a sweep when this process holds the lease."""
        if not self.leader:
            return
        with self._lock:
            try:
                now = self.ctx.now()
                self.sweep(now, self.holder)
                self.last_sweep = now
                metrics.last_sweep.set(now.timestamp())
            except Exception:
                log.exception("sweep failed; the next one retries")
