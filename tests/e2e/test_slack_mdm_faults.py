"""A broken or slow MDM server in Slack: people are told the truth, other people's requests and the
sweep's alerts go on, and nothing of the server's body or of loopback is reachable."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from bot.slack.builders import modals
from bot.slack.sweeper import Sweeper, SweepReport
from core.connections import installs, links
from core.tokens import servers
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_lifecycle import posts
from tests.e2e.test_slack_mdm import (
    _connection_values,
    _link,
    _open_add,
    _renew_from_alert,
    active,
)
from tests.fakemdm import FakeNanoDep
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

GARBAGE = b"SSH-2.0-OpenSSH_9.6\r\n"


def test_a_token_active_before_a_failed_push_is_never_called_unchanged(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    _link(bot, fake, nanodep)
    nanodep.answer_next_raw(GARBAGE, method="PUT")
    modal = _renew_from_alert(bot, fake)
    assert (
        "Couldn't install the new token for *school1* in NanoDEP (school1): NanoDEP (school1) at "
        "127.0.0.1 did not answer in HTTP mdmbot can read (BadStatusLine). The file is in your "
        "DMs. The old token already stopped working, so it cannot enrol or sync devices until "
        "then. mdmbot tries again "
    ) in modal
    dms = json.dumps(fake.messages_in(fake.dm_channel_for(ADMIN)))
    assert "nothing was changed" not in dms.lower()


def _install_waiting(bot: Bot) -> None:
    """The active token of school1 waits to be installed (as after a failed push)."""
    with bot.ctx.unit_of_work() as session:
        server = servers.find_server(session, "school1")
        installs.push_active(session, server, ADMIN, bot.clock())


def test_a_broken_or_hanging_mdm_server_never_holds_up_expiry_alerts(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    _link(bot, fake, nanodep)
    token = active(bot)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    _install_waiting(bot)
    nanodep.answer_next_raw(GARBAGE, method="PUT")
    report = sweeper.sweep(token.expires_at - timedelta(days=29))
    assert (report.alerts_sent, report.installs_tried) == (1, 1)
    with bot.ctx.unit_of_work() as session:
        shown = links.describe(session, servers.find_server(session, "school1").id)
    assert shown is not None and "(BadStatusLine)" in str(shown["last_install_error"])

    nanodep.delay = 6.0  # inside the 10 s deadline: the retry hangs all that time
    done: list[SweepReport] = []
    sweep = threading.Thread(
        target=lambda: done.append(sweeper.sweep(token.expires_at - timedelta(days=13)))
    )
    started = time.monotonic()
    sweep.start()
    bot.wait_idle(lambda: len(posts(fake)) == 2, timeout=4)
    assert time.monotonic() - started < 4, "the alert went out while the push hung"
    sweep.join(20)
    assert done and (done[0].alerts_sent, done[0].installs_tried) == (1, 1)
    assert nanodep.tokens["school1"]


def test_slow_mdm_servers_never_hold_bolts_listeners(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    view = _open_add(bot, fake)
    nanodep.delay = 5.0
    started = time.monotonic()
    for index in range(20):
        values = _connection_values(nanodep.url, f"school{index}")
        reply = bot.submit(ADMIN, view, values, view["id"])
        assert reply.status == 200 and reply.json()["response_action"] == "update"
    reply = bot.command(ADMIN, "list")
    assert reply.status == 200 and time.monotonic() - started < 4, "others are answered at once"
    bot.wait_idle(lambda: "try again in a minute" in json.dumps(fake.views[view["id"]]))
    modal = json.dumps(fake.views[view["id"]])
    assert "waiting on MDM servers for other requests" in modal and "Nothing was added" in modal
    nanodep.delay = 0


def test_loopback_is_refused_from_slack_without_the_allowlist(
    fake: FakeSlack, nanodep: FakeNanoDep, tmp_path: object
) -> None:
    bot = Bot(
        fake, f"sqlite:///{tmp_path}/bot.db", str(tmp_path),
        extra_env={"mdmbot_mdm_allow_networks": ""},
    )  # fmt: skip
    try:
        bot.grant(ADMIN)
        view = _open_add(bot, fake)
        bot.submit(ADMIN, view, _connection_values(nanodep.url, "school1"), view["id"])
        bot.wait_idle(lambda: "Couldn" in json.dumps(fake.views[view["id"]]))
        modal = json.dumps(fake.views[view["id"]], ensure_ascii=False)
        assert "mdmbot does not connect to 127.0.0.1 (127.0.0.1): it is a loopback address" in modal
        assert nanodep.calls == [] and modals.MDM_URL
    finally:
        bot.stop()
