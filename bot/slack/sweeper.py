"""Sweeps: expiry alerts, checklist reposts and reconciliation, posted to Slack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session

from bot import metrics
from bot.context import AppContext
from bot.slack import backups, dep_alerts, lifecycle
from bot.slack.builders import lifecycle_blocks as lb
from bot.slack.builders import phrases
from bot.slack.builders.blocks import Block, plural, section
from bot.slack.deliveries import settle_deliveries
from bot.slack.gateway import SlackUnavailable
from bot.slack.installs import SweepInstalls
from bot.slack.services import BotServices
from core import inbox, lease
from core.apple import status as apple_status
from core.apple import sync as apple_sync
from core.apple import usage
from core.connections import state as links_state
from core.connections.server_state import ServerState
from core.dep import auth as dep_auth
from core.dep import feedback as dep_feedback
from core.people import alerts, rotation
from core.people.alerts import DueAlert

log = logging.getLogger("mdmbot.sweeper")

RECONCILE_LEASE = "reconcile"
RECONCILE_EVERY = timedelta(days=1)
MAX_ALERTS_PER_SWEEP = 500
REPOST_EVERY = timedelta(days=1)


@dataclass
class SweepReport:
    """What one sweep did."""

    alerts_sent: int = 0
    alerts_failed: int = 0
    checklists_posted: int = 0
    messages_edited: int = 0
    departures_found: list[str] = field(default_factory=list)
    reconciled: bool = False
    deliveries_settled: int = 0
    unreachable: bool = False
    backed_up: bool = False
    installs_tried: int = 0
    renewed: int = 0
    apple_synced: bool = False

    def summary(self) -> str:
        """One line for logs and the command line."""
        checklists = plural(
            self.checklists_posted, "checklist or reminder", "checklists or reminders"
        )
        line = (
            f"{plural(self.alerts_sent, 'alert')} posted, {self.alerts_failed} failed (retried "
            f"next sweep), {checklists} posted, {plural(self.messages_edited, 'message')} edited "
            f"after a renewal, {plural(len(self.departures_found), 'missed departure')} found"
        )
        if self.unreachable:
            line += "; Slack could not be reached, so this sweep stopped posting"
        return line


class Sweeper:
    """Runs one sweep as of a given time; safe to run concurrently (claims are unique)."""

    def __init__(self, svc: BotServices, *, post_interval: float = 1.0) -> None:
        self.svc = svc
        self.post_interval = post_interval
        self._last_post = 0.0

    def sweep(self, now: datetime, holder: str = "sweep") -> SweepReport:
        """Post due alerts, repost open checklists, reconcile departures once a day."""
        report = SweepReport()
        ctx = self.svc.ctx
        report.deliveries_settled = settle_deliveries(self.svc, now)
        if ctx.settings.apple_mode:
            self._sync_apple(now, report)
            posted, failed = lifecycle.post_refusals(self.svc, now)  # e.g. refused by the CLI
            report.alerts_sent, report.alerts_failed = (
                report.alerts_sent + posted, report.alerts_failed + failed
            )
        report.backed_up = backups.scheduled_backup(self.svc, now, holder)
        if ctx.settings.apple_mode and not report.apple_synced:  # a sync noted it already
            with ctx.unit_of_work() as session:
                usage.note_apple_use(session, now)
        mdm = SweepInstalls(self.svc, now, f"{holder}:{ctx.holder}")
        mdm.start()
        try:
            self._post_all(now, holder, report)
        finally:
            report.installs_tried, report.renewed = mdm.finish()
        if report.installs_tried and not report.unreachable:  # what an install changed, shown now
            report.messages_edited += lifecycle.edit_stale(self.svc, self._pace)
        return report

    def _sync_apple(self, now: datetime, report: SweepReport) -> None:
        """Apple mode: read Apple's servers and devices; a failure is alerted once per kind and
        never stops the sweep (the alerts below run regardless)."""
        ctx = self.svc.ctx
        try:
            outcome = apple_sync.run_sync(lambda: ctx.apple, ctx.unit_of_work, now)
        except Exception:
            log.exception("Apple sync failed unexpectedly; the sweep goes on")
            return
        report.apple_synced = outcome.result is not None
        if outcome.error is not None:
            log.warning("Apple sync failed: %s", outcome.error.message)
        text = None
        if outcome.alert and outcome.error is not None:
            with ctx.unit_of_work(readonly=True) as session:
                health = apple_status.health(session)
            text = phrases.apple_sync_problem(
                apple_status.kind_of(outcome.error), outcome.error.message,
                health.failing_since, health.last_success_at, ctx.settings.apple_portal,
            )  # fmt: skip
        elif outcome.recovered:
            text = phrases.APPLE_SYNC_BACK.format(portal=ctx.settings.apple_portal)
        if text is None:
            return
        try:
            self.svc.gateway.post(lifecycle.alert_channel(self.svc), text, [section(text)])
            report.alerts_sent += 1
        except SlackUnavailable as exc:
            log.warning("could not post the Apple sync alert (%s)", exc.error)
            report.alerts_failed += 1
            if outcome.error is not None:  # not posted: the next sweep's failure alerts again
                with ctx.unit_of_work() as session:
                    apple_status.alert_not_posted(session, apple_status.kind_of(outcome.error))

    def _post_all(self, now: datetime, holder: str, report: SweepReport) -> None:
        """Alerts, install reminders, stale messages, reconciliation and checklist reposts."""
        ctx = self.svc.ctx
        with ctx.unit_of_work() as session:
            due = alerts.claim_due_alerts(
                session, now, ctx.settings.alert_days, limit=MAX_ALERTS_PER_SWEEP
            )
        for index, alert in enumerate(due):
            if not self._post_alert(alert, now, report):
                self._give_up(due[index + 1 :], now, report)
                break
        if report.unreachable:
            log.warning("sweep as of %s: %s", now.isoformat(), report.summary())
            return
        self._remind_installs(now, report)
        report.messages_edited = lifecycle.edit_stale(self.svc, self._pace)
        with ctx.unit_of_work() as session:
            if lease.acquire(
                session, RECONCILE_LEASE, f"{holder}@{now.isoformat()}", now, RECONCILE_EVERY
            ):
                report.reconciled = True
        if report.reconciled:
            self.reconcile(now, report)
        with ctx.unit_of_work() as session:
            reposts = rotation.cases_to_repost(session, now, REPOST_EVERY)
            inbox.forget_before(session, now - inbox.RETENTION)
            dep_auth.prune(session.connection(), now)
        for case in reposts:
            self._pace()
            if lifecycle.try_post_case(self.svc, case, now, REPOST_EVERY):
                report.checklists_posted += 1
        log.info("sweep as of %s: %s", now.isoformat(), report.summary())

    def _pace(self) -> None:
        # Slack: chat.postMessage allows about one message per second per channel.
        wait = self._last_post + self.post_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_post = time.monotonic()

    def _give_up(self, left: list[DueAlert], now: datetime, report: SweepReport) -> None:
        """Slack is unreachable: fail the sweep's remaining alerts at once (the next retries)."""
        report.unreachable = True
        with self.svc.ctx.unit_of_work() as session:
            for alert in left:
                alerts.mark_failed(session, alert.delivery_id, "not tried: Slack unreachable", now)
        metrics.alerts_failed.labels("expiry").inc(len(left))
        report.alerts_failed += len(left)

    def _post_alert(self, alert: DueAlert, now: datetime, report: SweepReport) -> bool:
        """Post one alert; False when Slack could not be reached at all."""
        self._pace()
        found = self.svc.server_state(token_id=alert.token_id, now=now)
        text = lb.alert_text(alert, now)
        blocks = lb.alert_blocks(alert, now, found[1] if found else None)
        error = dep_alerts.post_claimed(self.svc, alert.delivery_id, "expiry", text, blocks, now)
        if error is None:
            report.alerts_sent += 1
            return True
        report.alerts_failed += 1
        return error != "unreachable"

    def _remind_installs(self, now: datetime, report: SweepReport) -> None:
        """A new token its MDM server has not used 24 hours after issue: remind the channel;
        post replaced-token reports left waiting (by a process without Slack, or a failed post)."""
        with self.svc.ctx.unit_of_work() as session:
            reminders = dep_feedback.claim_install_reminders(session, now)
            waiting = dep_feedback.reclaim_replaced(session, now)
        for reminder in reminders:
            found = self.svc.server_state(token_id=reminder.token_id, now=now)
            st, server_id = (found[1], found[0].id) if found else (None, 0)
            text = dep_alerts.reminder_text(reminder, st)
            blocks = dep_alerts.reminder_blocks(reminder, st, server_id)
            self._post(reminder.delivery_id, "install", text, blocks, now, report)
        for alert in waiting:
            found = self.svc.server_state(token_id=alert.token_id, now=now)
            st, server_id = (found[1], found[0].id) if found else (None, 0)
            text = dep_alerts.replaced_text(alert, st)
            blocks = dep_alerts.replaced_blocks(alert, st, server_id)
            self._post(alert.delivery_id, "replaced", text, blocks, now, report)

    def _post(
        self,
        delivery_id: int,
        kind: str,
        text: str,
        blocks: list[Block],
        now: datetime,
        report: SweepReport,
    ) -> None:
        self._pace()
        if dep_alerts.post_claimed(self.svc, delivery_id, kind, text, blocks, now) is None:
            report.alerts_sent += 1
        else:
            report.alerts_failed += 1

    def reconcile(self, now: datetime, report: SweepReport) -> None:
        """Ask Slack about every downloader of an active token; open cases for missed departures."""
        with self.svc.ctx.unit_of_work() as session:
            users = rotation.downloaders_to_reconcile(session)
        for user_id in users:
            try:
                info = self.svc.gateway.user_info(user_id)
            except SlackUnavailable as exc:
                log.info("reconcile: users.info %s failed (%s)", user_id, exc.error)
                continue
            if not info.get("deleted"):
                continue
            report.departures_found.append(user_id)
            profile = info.get("profile") or {}
            with self.svc.ctx.unit_of_work() as session:
                rotation.record_departure(
                    session,
                    user_id,
                    now,
                    name=info.get("name"),
                    email=profile.get("email"),
                    real_name=info.get("real_name") or profile.get("real_name"),
                )


def preview(ctx: AppContext, now: datetime) -> list[str]:
    """What a sweep would post at `now`, writing nothing."""
    with ctx.unit_of_work() as session:
        due = alerts.preview_due_alerts(session, now, ctx.settings.alert_days)
        cases = rotation.cases_to_repost(session, now)
        reminders = dep_feedback.claim_install_reminders(session, now)  # rolled back below
        portal = ctx.settings.apple_portal
        states = [_state_of_token(session, r.token_id, now, portal) for r in reminders]
        session.rollback()
    channel = ctx.settings.mdmbot_alert_channel or "(MDMBOT_ALERT_CHANNEL)"
    apple = portal if ctx.settings.apple_mode else None
    lines = [
        f"would post to {channel}: {lb.alert_headline(a, now)} (expires "
        f"{a.expires_at:%Y-%m-%dT%H:%M:%SZ}, downloaded by {a.downloaded_by})"
        for a in due
    ]
    lines += [f"would post to {channel}: {lb.checklist_text(c, portal=apple)}" for c in cases]
    lines += [
        f"would post to {channel}: {dep_alerts.reminder_text(r, st)}"
        for r, st in zip(reminders, states, strict=True)
    ]
    return lines


def _state_of_token(
    session: Session, token_id: int, now: datetime, portal: str
) -> ServerState | None:
    """The state of the server a token belongs to."""
    server_id = links_state.server_of_token(session, token_id)
    found = links_state.server_state(session, server_id, now, portal) if server_id else None
    return found[1] if found else None
