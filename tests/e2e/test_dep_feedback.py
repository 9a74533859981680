"""The token feedback loop as a user sees it: installed / last seen, warnings and reminders."""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.serve import serve_dep
from bot.slack import dep_alerts
from bot.slack.sweeper import Sweeper, preview
from core.dep.feedback import record_rejected
from core.models import AlertDelivery, Token, TokenStatus
from tests import certs
from tests.dep_client import call, mdm_server_installs, oauth_header
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_guards import add_server
from tests.fakeslack import FakeSlack
from tests.processes import bot_env, mdmbot_command, run_cli
from tests.slack_harness import Bot


def _cli(bot: Bot, tmp_path: Path, *args: str) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MDMBOT_DATABASE_URL": bot.ctx.settings.database_url,
        "MDMBOT_DATA_DIR": str(tmp_path),
        "MDMBOT_SECRET_KEY": "k" * 40,
    }
    result = run_cli(list(args), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _warning_status(bot: Bot) -> str | None:
    with bot.ctx.unit_of_work(readonly=True) as session:
        return session.exec(
            select(AlertDelivery.status).where(AlertDelivery.kind == "replaced")
        ).first()


def _posts(fake: FakeSlack, words: str) -> list[dict[str, Any]]:
    return [m for m in fake.messages_in("C0ALERTS") if words in str(m.get("text"))]


def _reminders(fake: FakeSlack) -> list[dict[str, Any]]:
    """The daily reminders that a new token is not in use yet."""
    return [
        m
        for m in fake.messages_in("C0ALERTS")
        if "mdmbot reminds once a day" in json.dumps(m["blocks"])
    ]


def renew_in_slack(bot: Bot, fake: FakeSlack, name: str) -> None:
    """An admin renews the server's token with `/mdm token NAME` and confirms."""
    bot.command(ADMIN, f"token {name}")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) >= 2)
    view = bot.opened_view()
    uploads = len(fake.uploads)
    bot.submit(ADMIN, view, {}, view_id=view["id"])
    bot.wait_idle(lambda: len(fake.uploads) > uploads)


def test_installed_and_last_seen_show_everywhere(bot: Bot, fake: FakeSlack, tmp_path: Path) -> None:
    upload = add_server(bot, fake)
    shown = bot.command(ADMIN, "show Jamf Pro").json()
    assert f"the new token is waiting for upload (in <@{ADMIN}>'s DMs)" in json.dumps(shown)
    assert json.loads(_cli(bot, tmp_path, "token", "list", "--json"))[0]["installed_at"] is None

    mdm_server_installs(bot.ctx, bot.svc, upload)
    shown = json.dumps(bot.command(ADMIN, "show Jamf Pro").json())
    assert "in use since <!date^" in shown and "waiting for upload" not in shown
    assert "last seen" in shown
    [token] = json.loads(_cli(bot, tmp_path, "token", "list", "--json"))
    assert token["installed_at"] and token["last_used_at"]
    assert token["installed_user_agent"] == "nanodep-g-o-dep/0"
    assert token["installed_from"] == "127.0.0.1"
    show = _cli(bot, tmp_path, "server", "show", "Jamf Pro")
    assert "MDM server:" in show and "installed 20" in show and "Last seen:" in show
    published = len(fake.calls_to("views.publish"))
    bot.event({"type": "app_home_opened", "user": ADMIN, "tab": "home"}, event_id="EvHome")
    bot.wait_idle(lambda: len(fake.calls_to("views.publish")) > published)
    home = json.dumps(fake.published_home[ADMIN], ensure_ascii=False)
    assert "🟢 *Jamf Pro* — in use · expires <!date^" in home


def test_replaced_token_warns_once_and_reminder_after_a_day(bot: Bot, fake: FakeSlack) -> None:
    creds = mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake))
    renew_in_slack(bot, fake, "Jamf Pro")

    dep = serve_dep(bot.ctx, bot.svc, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{dep.port}/session"
        stamp = str(int(bot.clock().timestamp()))

        def attempt() -> None:
            header = oauth_header(creds, url, timestamp=stamp)
            assert call(url, {"Authorization": header})[:2] == (401, "token_rejected")

        fake.fail_next("chat.postMessage", error="internal_error", status=503, times=3)
        attempt()
        bot.wait_idle(lambda: _warning_status(bot) == "failed")
        for _ in range(3):
            attempt()
    finally:
        dep.close()
    warning = "Jamf Pro: still presents the replaced token"
    bot.wait_idle(lambda: len(_posts(fake, warning)) == 1)
    [posted] = _posts(fake, warning)
    assert posted["text"] == warning
    blocks = json.dumps(posted["blocks"])
    assert "*2 refused attempts*" in blocks, "the next attempt after Slack failed posts it"
    lead = posted["blocks"][1]["text"]["text"]
    assert lead.startswith("🟡 *Jamf Pro*: the MDM server still presents the replaced token")
    assert f"<@{ADMIN}> uploads the new token file to the MDM server" in lead
    assert "127.0.0.1" not in blocks and "(new token)" not in blocks
    assert "Send me the file again" in blocks and f"Only <@{ADMIN}> can get" in blocks

    sweeper, start = Sweeper(bot.svc, post_interval=0), bot.clock()
    assert preview(bot.ctx, start + timedelta(hours=25)) == [f"would post to C0ALERTS: {warning}"]
    assert not _reminders(fake)
    sweeper.sweep(start + timedelta(hours=23))
    assert not _reminders(fake), "a day's grace"
    sweeper.sweep(start + timedelta(hours=25))
    sweeper.sweep(start + timedelta(hours=26))
    [reminder] = _reminders(fake)
    assert reminder["text"] == warning, "the same state in the same words"
    assert "🔴 *Jamf Pro*: the MDM server still presents" in json.dumps(
        reminder["blocks"], ensure_ascii=False
    ), "a day later: red"
    sweeper.sweep(start + timedelta(hours=49))
    warned, first, second = fake.messages_in("C0ALERTS")
    assert _reminders(fake) == [second], "again the next day, and only the newest is live"
    superseded = "Superseded: the newer message about *Jamf Pro* below says what is left."
    assert warned["text"] == first["text"] == superseded
    assert "actions" not in json.dumps([warned["blocks"], first["blocks"]]), "no live button"
    posted = len(fake.messages_in("C0ALERTS"))
    mdm_server_installs(bot.ctx, bot.svc, fake.uploads[-1], certs.self_signed_rsa().key_pem)
    bot.wait_idle(lambda: len(_posts(fake, "Renewed and in use: Jamf Pro")) == 1)
    assert not _reminders(fake) and not _posts(fake, warning), "all settled"
    for settled in _posts(fake, "Renewed and in use"):
        text = json.dumps(settled["blocks"], ensure_ascii=False)
        assert "*Jamf Pro*: in use since <!date^" in text and "Send me" not in text
    sweeper.sweep(start + timedelta(hours=73))
    assert len(fake.messages_in("C0ALERTS")) == posted, "installed: no more reminders"


def test_a_dep_port_in_use_stops_start_up_with_one_line(fake: FakeSlack, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = bot_env(fake, tmp_path)
        result = subprocess.run(
            [
                *mdmbot_command(),
                "serve",
                "--http",
                "--port",
                "0",
                "--dep-host",
                "127.0.0.1",
                "--dep-port",
                port,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mdmbot: Cannot listen on 127.0.0.1:{port} for device assignment service (--dep-port) "
        "(Address already in use); is another process using it?"
    )


def test_a_replaced_token_report_taken_over_by_a_sweep_is_posted_once(
    bot: Bot, fake: FakeSlack
) -> None:
    mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake))
    renew_in_slack(bot, fake, "Jamf Pro")
    at = bot.clock()
    with bot.ctx.unit_of_work() as session:
        old = session.exec(select(Token).where(Token.status == TokenStatus.SUPERSEDED)).one()
        alert = record_rejected(session, old, at, "127.0.0.1")
    assert alert is not None, "claimed by a process that is slow to post it"
    Sweeper(bot.svc, post_interval=0).sweep(at + timedelta(minutes=16))  # another takes it over
    warning = "Jamf Pro: still presents the replaced token"
    assert len(_posts(fake, warning)) == 1
    dep_alerts.post_replaced(bot.svc, alert)  # the first process gets to it at last
    assert len(_posts(fake, warning)) == 1, "posted once"
