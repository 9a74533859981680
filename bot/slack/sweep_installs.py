"""The sweep's calls to MDM servers: install retries and automatic renewals' installs run on their
own pool while the sweep posts alerts and checklists, so a slow or broken MDM server never holds
those up; the sweep waits for them only at its end, and at most WAIT seconds."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.slack import dep_alerts, installs
from bot.slack.builders.blocks import section
from bot.slack.services import BotServices
from core.connections import installs as core_installs
from core.connections import links, renewals
from core.connections.links import ConnectionSpec
from core.errors import MdmbotError
from core.people import alerts
from core.tokens import issuance, servers

log = logging.getLogger("mdmbot.sweeper")

THREADS = 2
WAIT = 600.0


@dataclass(frozen=True)
class _Renewed:
    renewal: renewals.DueRenewal
    install_id: int
    spec: ConnectionSpec


class SweepInstalls:
    """One sweep's MDM work: started before its alerts, finished after them."""

    def __init__(self, svc: BotServices, now: datetime, holder: str) -> None:
        self.svc, self.now, self.holder = svc, now, holder
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix="mdmbot-sweep-mdm")
        self.retries: list[Future[bool]] = []
        self.renewals: list[Future[object]] = []

    def start(self) -> None:
        """Renew the tokens due (in the database, before any alert is claimed), then queue their
        installs and the retries that are due."""
        renewed = self._renew()
        mine = {r.install_id for r in renewed}
        with self.svc.ctx.unit_of_work(readonly=True) as session:
            due = [i for i in core_installs.due_installs(session, self.now) if i not in mine]
        self.retries = [self.pool.submit(self._retry, install_id) for install_id in due]
        self.renewals = [self.pool.submit(self._install_renewal, r) for r in renewed]

    def finish(self) -> tuple[int, int]:
        """Wait for the queued work (at most WAIT s); how many retries ran, how many renewed."""
        queued: list[Future[Any]] = [*self.retries, *self.renewals]
        wait(queued, timeout=WAIT)
        self.pool.shutdown(wait=False)
        for failed in (f.exception() for f in queued if f.done()):
            if failed is not None:
                log.error("sweep MDM work failed: %s", type(failed).__name__, exc_info=failed)
        tried = sum(1 for f in self.retries if f.done() and f.exception() is None and f.result())
        return tried, len(self.renewals)

    def _attempt(self, install_id: int) -> core_installs.InstallOutcome | None:
        ctx = self.svc.ctx
        return core_installs.attempt(
            ctx.unit_of_work, ctx.vault, ctx.installer, install_id, self.holder, lambda: self.now
        )

    def _retry(self, install_id: int) -> bool:
        """Retry one install (claimed, so once across replicas); whether it ran."""
        outcome = self._attempt(install_id)
        if outcome is None or outcome.skipped:
            return False
        log.info(
            "install retry server=%s attempt=%s %s",
            outcome.server_name,
            outcome.attempts,
            "installed" if outcome.installed else f"failed: {outcome.error}",
        )
        return True

    def _renew(self) -> list[_Renewed]:
        """Issue and activate a new token for each server inside its renewal window."""
        ctx, now = self.svc.ctx, self.now
        with ctx.unit_of_work() as session:
            due = renewals.claim_renewals(session, now)
        renewed = []
        for renewal in due:
            try:
                with ctx.unit_of_work() as session:
                    server = servers.find_server_by_id(session, renewal.server_id)
                    issued = issuance.issue_token(
                        session, ctx.vault, renewals.RENEWER, server, now,
                        expected=renewal.token_id,
                    )  # fmt: skip
                    spec = links.connection_of(session, ctx.vault, renewal.server_id)
                    assert spec is not None
                    core_installs.issue_through(
                        session, renewals.RENEWER, issued.token_id, spec, now
                    )
                    install_id = core_installs.install_id_of(session, issued.token_id)
            except MdmbotError as exc:
                log.warning("automatic renewal of %s failed: %s", renewal.server_name, exc.message)
                continue
            assert install_id is not None
            renewed.append(_Renewed(renewal, install_id, spec))
        return renewed

    def _install_renewal(self, renewed: _Renewed) -> None:
        """Install a renewed token and post the one notice that says how it went."""
        renewal, svc = renewed.renewal, self.svc
        outcome = self._attempt(renewed.install_id)
        installed = outcome is not None and outcome.installed
        error = outcome.error if outcome is not None else None
        label = renewed.spec.label()
        text = installs.renewed_notice(label, renewal.server_name, installed, error)
        dep_alerts.post_claimed(svc, renewal.claim_id, "autorenew", text, [section(text)], self.now)
        with svc.ctx.unit_of_work() as session:  # the notice already says what replaced the token
            alerts.mark_edited(session, renewal.claim_id, self.now)
