"""Apple mode in Slack: the sweep's sync (a failing Apple is alerted once per kind and shown on
the App Home, never stops the expiry alerts, a sync that succeeds again says so), and what only
Apple does refused in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.apple.client import AppleClient
from bot.apple.http import Transport
from bot.slack.builders import home_blocks
from bot.slack.sweeper import Sweeper
from core.roles import Actor, Role
from core.tokens.issuance import activate_token
from core.tokens.servers import add_server
from tests import certs
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_devices import respond_text
from tests.fakeapple import FakeApple
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, Clock

JAMF = "1F97349736CF4614A94F624E705841AD"
WAITS: list[float] = []


@pytest.fixture
def apple() -> Iterator[FakeApple]:
    fake = FakeApple()
    fake.add_server(JAMF, "Jamf Pro")
    fake.add_device("DMQX0001AB", JAMF)
    with fake.running():
        yield fake


@pytest.fixture
def school(fake: FakeSlack, apple: FakeApple, tmp_path: Path) -> Iterator[Bot]:
    settings = apple.settings(apple.write_key(tmp_path))
    running = Bot(fake, f"sqlite:///{tmp_path / 'bot.db'}", str(tmp_path), clock=Clock(),
                  extra_env=settings)  # fmt: skip
    running.grant(ADMIN)
    # Apple's back-off waits are recorded, not slept (the deadline still counts).
    running.ctx.__dict__["apple"] = AppleClient(running.ctx.settings, Transport(sleep=WAITS.append))
    yield running
    running.stop()


def _alerts(fake: FakeSlack) -> list[str]:
    return [str(m.get("text", "")) for m in fake.messages_in("C0ALERTS")]


def test_a_failing_apple_is_alerted_once_per_kind(
    school: Bot, fake: FakeSlack, apple: FakeApple
) -> None:
    sweeper = Sweeper(school.svc, post_interval=0)
    now = school.clock()
    assert sweeper.sweep(now).apple_synced
    assert school.svc.server_by_name("Jamf Pro").name == "Jamf Pro"
    # A token about to expire: its alert must go out whatever Apple does.
    with school.ctx.unit_of_work() as session:
        issued = add_server(session, school.ctx.vault, Actor(ADMIN), name="Lab",
                            certificate=certs.self_signed_rsa().pem, release_devices=True,
                            now=now - timedelta(days=360))  # fmt: skip
        activate_token(session, Actor(ADMIN), issued.token_id, now - timedelta(days=360))

    apple.revoked = True
    apple.tokens.clear()
    for _ in range(3):
        report = sweeper.sweep(now)
        assert not report.apple_synced
    posted = _alerts(fake)
    refused = [t for t in posted if "refuses mdmbot's API account" in t]
    assert len(refused) == 1, posted
    assert any("Lab" in t and "expires" in t.lower() for t in posted), posted
    school.svc.refresh_home(ADMIN)
    home = fake.calls_to("views.publish")[-1].params
    assert "refuses mdmbot's API account" in str(home)

    apple.revoked = False
    for _ in range(7):
        apple.fault("/v1/mdmServers", status=503)
    sweeper.sweep(now)
    sweeper.sweep(now)
    unreachable = [t for t in _alerts(fake) if "cannot reach Apple" in t]
    assert len(unreachable) == 1, _alerts(fake)

    apple.faults.clear()
    assert sweeper.sweep(now).apple_synced
    assert sum("syncs with Apple School Manager again" in t for t in _alerts(fake)) == 1
    school.svc.refresh_home(ADMIN)
    assert "refuses mdmbot" not in str(fake.calls_to("views.publish")[-1].params)


def test_what_apple_does_is_refused_in_slack(school: Bot, fake: FakeSlack) -> None:
    Sweeper(school.svc, post_interval=0).sweep(school.clock())
    assert "Replace Certificate" in respond_text(school, fake, ADMIN, "cert Jamf Pro")
    assert "come from Apple School Manager" in respond_text(school, fake, ADMIN, "devices import")
    assert "released in Apple School Manager" in respond_text(
        school, fake, ADMIN, "release DMQX0001AB"
    )
    assert not fake.calls_to("views.open"), "no modal opened"
    listing = respond_text(school, fake, ADMIN, "devices Jamf Pro")
    assert "DMQX0001AB" in listing and "As Apple School Manager showed them" in listing


def test_a_sync_alert_slack_refused_is_posted_at_the_next_sweep(
    school: Bot, fake: FakeSlack, apple: FakeApple
) -> None:
    sweeper = Sweeper(school.svc, post_interval=0)
    now = school.clock()
    apple.revoked = True
    apple.tokens.clear()
    fake.fail_next("chat.postMessage")
    assert sweeper.sweep(now).alerts_failed == 1
    assert not _alerts(fake)
    sweeper.sweep(now)
    sweeper.sweep(now)
    assert sum("refuses mdmbot's API account" in t for t in _alerts(fake)) == 1, _alerts(fake)


def test_help_lists_only_what_works_in_apple_mode(school: Bot, fake: FakeSlack) -> None:
    said = json.dumps(school.command(ADMIN, "help").json(), ensure_ascii=False)
    token = "`/mdm token NAME` — upload a server's token downloaded from Apple School Manager"
    assert token in said
    assert "replace the tokens you downloaded from Apple School Manager" in said
    for refused in ("/mdm cert", "/mdm devices import", "/mdm release", "/mdm defaults",
                    "renew the tokens", "get its token by DM"):  # fmt: skip
        assert refused not in said, refused
    business = home_blocks.help_text(Role.ADMINISTRATOR, "Apple Business")
    assert "from Apple Business" in business and "School Manager" not in business
    sandbox = home_blocks.help_text(Role.ADMINISTRATOR)
    assert "/mdm cert NAME" in sandbox and "/mdm release SERIAL…" in sandbox
