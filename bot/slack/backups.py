"""The sweep leader's daily backup into MDMBOT_BACKUP_DIR; a failure is posted once."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.slack.builders.blocks import section
from bot.slack.gateway import SlackUnavailable
from bot.slack.services import BotServices
from core.backup import schedule
from core.backup.archive import installed_version
from core.backup.snapshot import take_backup
from core.errors import MdmbotError

log = logging.getLogger("mdmbot.backups")


def scheduled_backup(svc: BotServices, now: datetime, holder: str) -> bool:
    """Take today's backup when none was taken in the last day; whether one was written."""
    ctx = svc.ctx
    directory = ctx.settings.mdmbot_backup_dir
    if directory is None:
        return False
    with ctx.unit_of_work() as session:
        if not schedule.claim_backup(session, holder, now):
            return False
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = schedule.backup_path(directory, now)
        take_backup(ctx.engine, ctx.vault, path, force=False, now=now, version=installed_version())
        removed = schedule.prune(directory, ctx.settings.mdmbot_backup_keep)
    except Exception as exc:
        reason = exc.message if isinstance(exc, MdmbotError) else (
            getattr(exc, "strerror", None) or type(exc).__name__
        )
        log.exception("scheduled backup into %s failed: %s", directory, reason)
        with ctx.unit_of_work() as session:
            schedule.give_back(session, holder, now)
            first = schedule.first_failure(session, now)
        if first and not _report(svc, str(directory), str(reason)):
            with ctx.unit_of_work() as session:
                schedule.forget_failure(session)  # not posted: the next failure tries again
        return False
    with ctx.unit_of_work() as session:
        schedule.forget_failure(session)
    log.info("scheduled backup written to %s (%d old ones removed)", path, len(removed))
    return True


def _report(svc: BotServices, directory: str, reason: str) -> bool:
    """Tell the alert channel once; the next good backup re-arms the warning."""
    channel = svc.ctx.settings.mdmbot_alert_channel
    text = (
        f":warning: The daily backup into {directory} failed ({reason}). mdmbot retries every "
        "sweep and will not post again until a backup succeeds; check the disk and the logs."
    )
    if not channel:
        return False
    try:
        svc.gateway.post(channel, text, [section(text)])
    except SlackUnavailable as exc:
        log.warning("could not post the backup failure to %s (%s)", channel, exc.error)
        return False
    return True
