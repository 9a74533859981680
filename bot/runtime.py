"""The long-running parts of a bot process: health, metrics and the scheduler."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import text

from bot import metrics
from bot.context import AppContext
from bot.scheduler import Scheduler
from bot.slack.deliveries import settle_deliveries
from bot.slack.gateway import SlackUnavailable
from bot.slack.services import BotServices
from bot.slack.sweeper import Sweeper
from core.backup import schedule
from core.tokens import servers
from core.tokens.issuance import DELIVERY_GRACE
from core.tokens.servers import ServerView

log = logging.getLogger("mdmbot.runtime")
RECHECK_SECONDS = 60.0


class Runtime:
    """The long-running parts around the app: health and the scheduler.

    Over HTTP the process that forks the workers runs it (one scheduler however many workers);
    a worker only answers /healthz from its copy and finishes its own background jobs.
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
        self._settle_later: threading.Timer | None = None
        self.alert_channel: dict[str, Any] = {"member": None, "detail": "not checked yet"}
        self._checked_at = 0.0

    def watch(self) -> None:
        """Publish the gauges read at scrape time (before forking: the metrics listener's
        process has them too)."""
        metrics.watch_expiry(self._servers, self.ctx.now)
        directory = self.ctx.settings.mdmbot_backup_dir
        metrics.watch_backups(
            None if directory is None else lambda: schedule.newest_age(directory, self.ctx.now())
        )

    def start(self) -> None:
        """Start background work (after any fork: no thread of it crosses one)."""
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.watch()
        self.svc.background.submit(self.check_alert_channel)
        self.svc.background.submit(self._settle)
        # A delivery cut short just before this start is settled once its grace period is over.
        self._settle_later = threading.Timer(DELIVERY_GRACE.total_seconds() + 5, self._settle)
        self._settle_later.daemon = True
        self._settle_later.start()
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
        if self._settle_later is not None:
            self._settle_later.cancel()
        if self.scheduler is not None:
            self.scheduler.stop()
        self.svc.background.shutdown(wait=True)
        self.svc.mdm.shutdown(wait=True)

    def stop_worker(self) -> None:
        """In a worker process: finish its background jobs (the scheduler is not its own)."""
        self.svc.background.shutdown(wait=True)
        self.svc.mdm.shutdown(wait=True)

    def check_alert_channel(self) -> dict[str, Any]:
        """Ask Slack whether the bot is a member of MDMBOT_ALERT_CHANNEL; log it if not."""
        channel = self.ctx.settings.mdmbot_alert_channel
        self._checked_at = time.monotonic()
        if not channel:
            self.alert_channel = {"member": None, "detail": "MDMBOT_ALERT_CHANNEL is not set"}
            return self.alert_channel
        try:
            member = self.svc.gateway.is_member(channel)
        except SlackUnavailable as exc:
            member, detail = None, f"could not check ({exc.error})"
        else:
            detail = "ok" if member else "not a member: invite the bot with /invite @mdmbot"
        self.alert_channel = {"member": member, "detail": detail}
        if member is False:
            log.error(
                "mdmbot is not a member of MDMBOT_ALERT_CHANNEL %s: alerts and checklists "
                "can't be posted until someone runs /invite @mdmbot there",
                channel,
            )
        elif member is None:
            log.warning(
                "could not check membership of MDMBOT_ALERT_CHANNEL %s: %s", channel, detail
            )
        return self.alert_channel

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
        """For /healthz: a status ("unavailable" without the database) and alert channel state."""
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unavailable (%s)", type(exc).__name__)
            return {"status": "unavailable"}
        if self.alert_channel.get("member") is not True:
            if time.monotonic() - self._checked_at >= RECHECK_SECONDS:
                self._checked_at = time.monotonic()
                self.svc.background.submit(self.check_alert_channel)
        return {"status": "ok", "alert_channel": dict(self.alert_channel)}
