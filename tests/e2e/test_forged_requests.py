"""Scenarios: requests Slack did not sign, and signed payloads replayed or tampered with."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
from slack_bolt import BoltRequest

from bot.http import VERIFIED
from bot.slack.app import build_app
from tests.e2e.conftest import ADMIN
from tests.fakeslack import FakeSlack
from tests.slack_harness import TEAM, Bot


def raw_post(bot: Bot, body: str, headers: dict[str, str]) -> tuple[int, str]:
    """POST to /slack/events with exactly these headers (no signing)."""
    request = urllib.request.Request(
        f"{bot.url}/slack/events",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("timestamp", ["abc", "1e3", " 17", "1²³", "", "99999999999999999999"])
def test_unsigned_request_with_a_malformed_timestamp_gets_401_and_dms_nobody(
    bot: Bot, fake: FakeSlack, caplog: pytest.LogCaptureFixture, timestamp: str
) -> None:
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM},
        "user": {"id": ADMIN, "team_id": TEAM},
        "view": {"id": "V1", "callback_id": "confirm_token", "private_metadata": "{}"},
    }
    body = urlencode({"payload": json.dumps(payload)})
    command = urlencode({"command": "/mdm", "text": "list", "user_id": ADMIN, "team_id": TEAM})
    calls = len(fake.calls)
    with caplog.at_level(logging.INFO):
        for sent in (body, command):
            status, text = raw_post(
                bot,
                sent,
                {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + "0" * 64},
            )
            assert (status, text) == (401, "Unauthorized")
        time.sleep(0.3)
    assert fake.calls[calls:] == [], "an unverified request reaches no Slack API"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("mode", "context", "dms"),
    [
        ("http", {}, 0),
        ("http", {VERIFIED: True}, 1),
        ("socket_mode", {}, 1),
    ],
)
def test_the_error_handler_messages_only_verified_requests(
    bot: Bot, fake: FakeSlack, mode: str, context: dict[str, object], dms: int
) -> None:
    app = build_app(bot.svc, signing_secret=None)
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": ADMIN, "team_id": TEAM},
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": "renew_token", "value": "not-a-number"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    request = BoltRequest(
        body=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
        context=dict(context),
        mode=mode,
    )
    app.dispatch(request)
    bot.wait_idle(lambda: len(fake.calls_to("chat.postMessage")) >= dms, timeout=3)
    time.sleep(0.2)
    warned = [c for c in fake.calls_to("chat.postMessage") if "went wrong" in str(c.params)]
    assert len(warned) == dms
