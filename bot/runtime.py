"""The long-running parts of a bot process: health, metrics and the scheduler."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from sqlalchemy import text

from bot import metrics
from bot.context import AppContext
from bot.scheduler import Scheduler
from bot.slack.services import BotServices
from bot.slack.sweeper import Sweeper
from core import servers
from core.servers import ServerView

log = logging.getLogger("mdmbot.runtime")


class Runtime:
    """The long-running parts around the app: health and the scheduler.

    With several worker processes each worker has its own, started after the fork: the
    scheduler's lease holder names the worker's pid, so only one worker sweeps.
    """

    def __init__(
        self, ctx: AppContext, svc: BotServices, *, scheduler: bool, post_interval: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.svc = svc
        self.holder = ""
        self._wants_scheduler = scheduler
        self._post_interval = post_interval
        self.scheduler: Scheduler | None = None

    def start(self) -> None:
        """Start background work (in the process that serves: after any fork)."""
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        metrics.watch_expiry(self._servers, self.ctx.now)
        if self._wants_scheduler:
            self.scheduler = Scheduler(
                self.ctx,
                Sweeper(self.svc, post_interval=self._post_interval).sweep,
                self.holder,
                sweep_minutes=self.ctx.settings.mdmbot_sweep_minutes,
                lease_seconds=self.ctx.settings.mdmbot_lease_seconds,
            )
            self.scheduler.start()

    def stop(self) -> None:
        """Stop background work and wait for in-flight jobs."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.svc.background.shutdown(wait=True)

    def _servers(self) -> list[ServerView]:
        with self.ctx.unit_of_work(readonly=True) as session:
            return servers.list_servers(session)

    def health(self) -> dict[str, Any]:
        """For /healthz: only a status ("ok", or "unavailable" when the database is not)."""
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unavailable (%s)", type(exc).__name__)
            return {"status": "unavailable"}
        return {"status": "ok"}
