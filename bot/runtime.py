"""The long-running parts of a bot process: health, metrics and the scheduler."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import text

from bot import metrics
from bot.context import AppContext
from bot.scheduler import Scheduler
from bot.slack.deliveries import settle_deliveries
from bot.slack.services import BotServices
from bot.slack.sweeper import Sweeper
from core import servers
from core.issuance import DELIVERY_GRACE
from core.servers import ServerView

log = logging.getLogger("mdmbot.runtime")


class Runtime:
    """The long-running parts around the app: health and the scheduler."""

    def __init__(
        self, ctx: AppContext, svc: BotServices, *, scheduler: bool, post_interval: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.svc = svc
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.scheduler: Scheduler | None = None
        self._settle_later: threading.Timer | None = None
        if scheduler:
            self.scheduler = Scheduler(
                ctx,
                Sweeper(svc, post_interval=post_interval).sweep,
                self.holder,
                sweep_minutes=ctx.settings.mdmbot_sweep_minutes,
                lease_seconds=ctx.settings.mdmbot_lease_seconds,
            )

    def start(self) -> None:
        """Start background work."""
        metrics.watch_expiry(self._servers, self.ctx.now)
        self.svc.background.submit(self._settle)
        # A delivery cut short just before this start is settled once its grace period is over.
        self._settle_later = threading.Timer(DELIVERY_GRACE.total_seconds() + 5, self._settle)
        self._settle_later.daemon = True
        self._settle_later.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        """Stop background work and wait for in-flight jobs."""
        if self._settle_later is not None:
            self._settle_later.cancel()
        if self.scheduler is not None:
            self.scheduler.stop()
        self.svc.background.shutdown(wait=True)

    def _settle(self) -> None:
        """Settle deliveries a previous process left unfinished (also done by every sweep)."""
        try:
            settle_deliveries(self.svc, self.ctx.now())
        except Exception:
            log.exception("could not settle unfinished token deliveries")

    def _servers(self) -> list[ServerView]:
        with self.ctx.unit_of_work(readonly=True) as session:
            return servers.list_servers(session)

    def health(self) -> dict[str, Any]:
        """Database and scheduler state for /healthz."""
        report: dict[str, Any] = {"status": "ok"}
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            report["database"] = "ok"
        except Exception as exc:
            report["status"], report["database"] = "error", type(exc).__name__
        report["scheduler"] = self.scheduler.state() if self.scheduler else {"role": "disabled"}
        return report
