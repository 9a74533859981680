"""The sweep leader's daily backup: one a day, the newest N kept, its age in /metrics, a failure
told to the alert channel once."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.slack.sweeper import Sweeper
from core.backup.archive import BackupReader
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, Clock

START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def bot(fake: FakeSlack, tmp_path: Path) -> Iterator[Bot]:
    """A bot on SQLite taking scheduled backups into tmp/backups, keeping two."""
    running = Bot(
        fake,
        f"sqlite:///{tmp_path / 'bot.db'}",
        str(tmp_path / "data"),
        clock=Clock(START),
        extra_env={"mdmbot_backup_dir": tmp_path / "backups", "mdmbot_backup_keep": 2},
    )
    yield running
    running.stop()


def _sweep(bot: Bot, at: datetime) -> None:
    bot.clock.now = at
    Sweeper(bot.svc, post_interval=0).sweep(at)


def _backups(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "backups").glob("*"))


def _age(bot: Bot) -> str:
    with urllib.request.urlopen(f"{bot.metrics_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next((ln for ln in text.splitlines() if ln.startswith("mdmbot_backup_age")), "")


def _failures(fake: FakeSlack) -> list[str]:
    return [str(m["text"]) for m in fake.messages_in("C0ALERTS") if "daily backup" in m["text"]]


def test_one_backup_a_day_and_only_the_newest_are_kept(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    assert _age(bot) == "", "no sample before the first backup"
    _sweep(bot, START)
    assert _backups(tmp_path) == ["mdmbot-20261201T020000Z.mdmbackup"]
    reader = BackupReader(tmp_path / "backups" / "mdmbot-20261201T020000Z.mdmbackup")
    reader.close()
    assert reader.manifest.created_at == "2026-12-01T02:00:00Z"
    _sweep(bot, START + timedelta(hours=1))
    assert len(_backups(tmp_path)) == 1, "one a day"
    assert _age(bot) == "mdmbot_backup_age_seconds 3600.0"
    for day in (1, 2, 3):
        _sweep(bot, START + timedelta(days=day, minutes=1))
    assert _backups(tmp_path) == [
        "mdmbot-20261203T020100Z.mdmbackup",
        "mdmbot-20261204T020100Z.mdmbackup",
    ]
    assert _failures(fake) == []


def test_a_failing_backup_is_posted_once_until_one_succeeds(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.write_text("not a directory")
    _sweep(bot, START)
    _sweep(bot, START + timedelta(hours=1))
    _sweep(bot, START + timedelta(days=1))
    assert len(_failures(fake)) == 1, "told once, though every sweep retried"
    assert _age(bot) == "", "/metrics still answers, without a sample"
    assert str(backups) in _failures(fake)[0] and "Traceback" not in _failures(fake)[0]
    backups.unlink()
    _sweep(bot, START + timedelta(days=1, hours=1))
    assert len(_backups(tmp_path)) == 1 and len(_failures(fake)) == 1
    shutil.rmtree(backups)
    backups.write_text("broken again")
    _sweep(bot, START + timedelta(days=2, hours=2))
    assert len(_failures(fake)) == 2, "a new failure after a good backup is told again"
