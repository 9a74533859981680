"""`mdmbot serve` options: bad ports and missing settings refused first; `--no-slack`."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import select

from bot.slack.sweeper import Sweeper
from core.models import AlertDelivery
from core.roles import Actor
from core.tokens import issuance, servers
from tests import certs
from tests.dep_client import call, oauth_header, open_token
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_guards import add_server
from tests.fakeslack import FakeSlack
from tests.processes import BotProcess, bot_env, free_port, mdmbot_command
from tests.slack_harness import Bot

APPLE = {"MDMBOT_APPLE_API": "school", "MDMBOT_APPLE_CLIENT_ID": "SCHOOLAPI.x",
         "MDMBOT_APPLE_KEY_ID": "k", "MDMBOT_APPLE_KEY_FILE": "/nonexistent/key.pem"}  # fmt: skip


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mdmbot_command(), "serve", *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "extra", "says"),
    [
        (("--http", "--port", "70000"), {}, "--port (or PORT) must be a port number from 1 to "
         "65535 (not “70000”)."),
        (("--http", "--dep-port", "99999"), {}, "--dep-port must be a port number from 1 to "
         "65535 (not “99999”)."),
        (("--http", "--metrics-port", "x"), {}, "--metrics-port must be a port number"),
        (("--http",), {"PORT": "http"}, "--port (or PORT) must be a port number"),
        (("--http",), {"MDMBOT_DEP_PORT": "-1"}, "MDMBOT_DEP_PORT must be a port number"),
        (("--http",), {"SLACK_BOT_TOKEN": ""}, "Missing required setting SLACK_BOT_TOKEN."),
        ((), {"SLACK_APP_TOKEN": ""}, "Missing required setting SLACK_APP_TOKEN"),
        (("--http", "--dep-port", "8443"), APPLE, "--dep-port is refused in Apple mode"),
        (("--http",), {**APPLE, "MDMBOT_DEP_PORT": "8443"}, "MDMBOT_DEP_PORT is refused in "
         "Apple mode"),
        (("--no-slack",), APPLE, "--no-slack serves only Apple's side"),
        (("--http",), {**APPLE, "MDMBOT_APPLE_KEY_ID": ""}, "Missing required setting "
         "MDMBOT_APPLE_KEY_ID."),
        (("--http",), APPLE, "Cannot read MDMBOT_APPLE_KEY_FILE /nonexistent/key.pem"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_anything_is_created(
    fake: FakeSlack, tmp_path: Path, args: tuple[str, ...], extra: dict[str, str], says: str
) -> None:
    env = bot_env(fake, tmp_path / "data", **extra)
    del env["MDMBOT_SECRET_KEY"]
    result = _serve(env, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"mdmbot: {says}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists(), "no database and no secret.key"


def _warning(bot: Bot) -> tuple[str, str | None] | None:
    with bot.ctx.unit_of_work(readonly=True) as session:
        row = session.exec(
            select(AlertDelivery.status, AlertDelivery.error).where(
                AlertDelivery.kind == "replaced"
            )
        ).first()
    return (row[0], row[1]) if row else None


def test_no_slack_serves_dep_health_and_metrics_and_leaves_alerts_for_slack(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    old = open_token(add_server(bot, fake)["bytes"], certs.self_signed_rsa().key_pem)
    vault = bot.ctx.vault
    with bot.ctx.unit_of_work() as session:
        operator = Actor(ADMIN, operator=True)
        server = servers.find_server(session, "Jamf Pro")
        issued = issuance.issue_token(session, vault, operator, server, bot.clock())
        issuance.activate_token(session, operator, issued.token_id, bot.clock())
    env = bot_env(fake, tmp_path / "nodata", bot.ctx.settings.database_url)
    env = {k: v for k, v in env.items() if not k.startswith("SLACK_")}
    del env["MDMBOT_ALERT_CHANNEL"]
    port, metrics_port, dep_port = free_port(), free_port(), free_port()
    process = BotProcess(
        env, tmp_path / "serve.log", "serve", "--no-slack", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(metrics_port),
        "--dep-host", "127.0.0.1", "--dep-port", str(dep_port),
    )  # fmt: skip
    try:
        health: dict[str, str] = {}

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health.update(json.loads(r.read()))
                    return True
            except OSError:
                return False

        process.wait_until(healthy)
        assert health == {"status": "ok", "slack": "off"}
        url = f"http://127.0.0.1:{dep_port}/session"
        assert call(url, {"Authorization": oauth_header(old, url)})[:2] == (401, "token_rejected")
        process.wait_until(lambda: _warning(bot) is not None and _warning(bot)[0] == "failed")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert 'endpoint="/session"' in r.read().decode()
    finally:
        assert process.terminate() == 0
    warning = "Jamf Pro: still presents the replaced token"
    assert not [m for m in fake.messages_in("C0ALERTS") if warning in str(m.get("text"))]
    assert "waiting for a process with Slack" in str(_warning(bot))
    # A process with Slack posts it at its next sweep, once.
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    posted = [m for m in fake.messages_in("C0ALERTS") if warning in str(m.get("text"))]
    assert len(posted) == 1 and "Jamf Pro" in posted[0]["text"]
    assert _warning(bot) is not None and _warning(bot)[0] == "sent"
