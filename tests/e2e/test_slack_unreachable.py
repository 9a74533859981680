"""Slack unreachable: one line per failure, and a sweep stops posting after the first one."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.context import AppContext
from bot.slack.app import build_app
from bot.slack.listeners.actions import ADD_SHORTCUT
from core.roles import Actor
from core.settings import Settings
from core.tokens import issuance, servers
from tests.e2e.test_cli import _valid_now
from tests.fakeslack import FakeSlack
from tests.processes import bot_env, run_cli
from tests.slack_harness import Bot

OPERATOR = Actor("U0OPERATOR", operator=True)


class Refuser:
    """A port that accepts connections and hangs up at once, counting them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/api/"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture
def refuser() -> Iterator[Refuser]:
    """Slack's address, with nothing answering there."""
    down = Refuser()
    yield down
    down.sock.close()


def _seed(data_dir: Path, count: int) -> None:
    """`count` servers with active tokens, as `server add` leaves them."""
    ctx = AppContext(Settings(mdmbot_data_dir=data_dir, mdmbot_secret_key="k" * 40))
    ctx.prepare_database()
    pem = _valid_now(0, "mdm.example.edu").pem
    for index in range(count):
        with ctx.unit_of_work() as session:
            issued = servers.add_server(
                session,
                ctx.vault,
                OPERATOR,
                name=f"Server {index}",
                certificate=pem,
                release_devices=True,
                now=ctx.now(),
            )
        with ctx.unit_of_work() as session:
            issuance.activate_token(session, OPERATOR, issued.token_id, ctx.now())
    ctx.engine.dispose()


def test_alerts_run_gives_up_after_the_first_connection_failure(
    refuser: Refuser, fake: FakeSlack, tmp_path: Path
) -> None:
    _seed(tmp_path, 11)
    env = bot_env(fake, tmp_path, SLACK_API_URL=refuser.url, MDMBOT_ALERT_DAYS="400")

    down = run_cli(["alerts", "run"], env=env)

    assert down.returncode == 1
    assert down.stdout.startswith("0 alerts posted, 11 failed (retried next sweep)")
    assert "Slack could not be reached, so this sweep stopped posting" in down.stdout
    # One call's attempts (the first try and two retries), not 11 calls' worth.
    assert refuser.connections == 3
    logged = down.stderr.splitlines()
    failures = [line for line in logged if "chat_postMessage failed" in line]
    assert len(failures) == 1, down.stderr
    assert failures[0].startswith("WARNING mdmbot.slack: slack chat_postMessage failed: ")
    assert "Traceback" not in down.stderr and "slack_sdk" not in down.stderr

    env["SLACK_API_URL"] = fake.url  # Slack is back: the next sweep posts every alert
    back = run_cli(["alerts", "run"], env=env)
    assert back.stdout.startswith("11 alerts posted, 0 failed"), back.stderr
    assert len(fake.messages_in("C0ALERTS")) == 11


def test_bolt_does_not_warn_about_the_token_at_start(
    bot: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    with caplog.at_level(logging.DEBUG):
        build_app(bot.svc, signing_secret="secret")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failed_slack_call_in_a_listener_is_one_log_line(
    bot: Bot, fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("views.open", error="internal_error", status=500, times=3)
    with caplog.at_level(logging.INFO):
        reply = bot.shortcut("UADMIN01", ADD_SHORTCUT)
        assert reply.status == 200
        bot.wait_idle(lambda: bool(fake.calls_to("chat.postMessage")))
    logged = [r for r in caplog.records if r.name.startswith(("mdmbot", "slack"))]
    assert not [r for r in logged if r.exc_info], "no traceback"
    assert [r.getMessage().split(" ref=")[0] for r in logged if r.levelno >= logging.WARNING] == [
        "slack views_open failed: internal_error (HTTP 500)",
        "Slack call failed",
    ]
