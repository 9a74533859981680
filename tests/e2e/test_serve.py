"""The real `mdmbot serve --http` process: health, metrics, JSON logs, SIGTERM."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ADMIN
from tests.fakeslack import FakeSlack
from tests.processes import ServeProcess, bot_env, mdmbot_command
from tests.slack_harness import sign


def post_command(url: str, text: str, user: str, fake: FakeSlack) -> tuple[int, str, str]:
    """One signed `/mdm` command on a new connection: status, body and the answering worker."""
    import time
    from urllib.parse import urlencode

    body = urlencode(
        {
            "team_id": "T0001",
            "channel_id": "C0GENERAL",
            "user_id": user,
            "user_name": "alex",
            "command": "/mdm",
            "text": text,
            "response_url": fake.response_url(),
            "trigger_id": "1.2.3",
        }
    )
    ts = int(time.time())
    request = urllib.request.Request(
        f"{url}/slack/events",
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign(body, ts),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        worker = response.headers.get("X-Mdmbot-Worker", "")
        return response.status, response.read().decode(), worker


def test_serve_over_http_answers_reports_health_and_stops_on_sigterm(
    fake: FakeSlack, tmp_path: Path
) -> None:
    env = bot_env(fake, tmp_path, MDMBOT_ADMINS=ADMIN, MDMBOT_LOG_FORMAT="json")
    bot = ServeProcess(env, tmp_path / "serve.log")
    try:
        health = bot.wait_ready()
        assert health["status"] == "ok" and set(health) == {"status", "alert_channel"}, (
            "/healthz says only a status and whether the bot can post alerts"
        )
        status, body, _ = post_command(bot.url, "help", ADMIN, fake)
        assert status == 200 and "Administrator" in body, "MDMBOT_ADMINS granted the role"
        metrics = bot.metrics()
        assert 'mdmbot_slack_requests_total{kind="command",status="200"} 1.0' in metrics
        assert "mdmbot_ack_seconds_bucket" in metrics
        bot.wait_until(lambda: bot.metric("mdmbot_scheduler_leader") == 1.0)
    finally:
        code = bot.terminate()
    assert code == 0
    lines = [json.loads(line) for line in bot.log().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    granian = [line for line in lines if line["logger"].startswith("_granian")]
    assert all(line["level"] in ("warning", "error", "critical") for line in granian), granian
    assert fake.bot_token not in bot.log() and "k" * 40 not in bot.log()


def test_missing_settings_stop_start_up_with_one_line(fake: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(fake, tmp_path)
    del env["SLACK_SIGNING_SECRET"]
    result = subprocess.run(
        [*mdmbot_command(), "serve", "--http"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "mdmbot: Missing required setting SLACK_SIGNING_SECRET."
    env = bot_env(fake, tmp_path, SLACK_BOT_TOKEN="xoxb-wrong")
    result = subprocess.run(
        [*mdmbot_command(), "serve", "--http"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mdmbot: Slack refused")
