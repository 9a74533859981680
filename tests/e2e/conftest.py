"""Fixtures for scenario tests: a fake Slack and a running bot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

ADMIN = "UADMIN01"
STRANGER = "USTRANGE1"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running fake Slack with an admin, a stranger and the alert channel."""
    slack = FakeSlack().start()
    slack.add_user(ADMIN, "alex", "alex@school.example")
    slack.add_user(STRANGER, "sam", "sam@school.example")
    slack.add_channel("C0ALERTS", "mdm-alerts")
    slack.add_channel("C0GENERAL", "general")
    yield slack
    slack.stop()


@pytest.fixture
def bot(fake: FakeSlack, tmp_path: Path) -> Iterator[Bot]:
    """The bot on SQLite, with ADMIN as Administrator."""
    running = Bot(fake, f"sqlite:///{tmp_path / 'bot.db'}", str(tmp_path))
    running.grant(ADMIN)
    yield running
    running.stop()
