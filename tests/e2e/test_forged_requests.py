"""Scenarios: requests Slack did not sign, and signed payloads replayed or tampered with."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import BoltRequest

from bot.http import VERIFIED
from bot.slack.app import build_app
from core.sealing import seal
from core.tokens import issuance
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_guards import active_tokens, add_server, server_id
from tests.e2e.test_slack_lifecycle import press_on
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
    for call in warned:  # the crash may come after a change was committed: never deny one
        assert "may have happened" in str(call.params) and "nothing was" not in str(call.params)


def _submission(user: str, view: dict[str, Any], metadata: str) -> dict[str, Any]:
    """A view_submission payload for an opened modal, with this private_metadata."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0MDMBOT",
        "trigger_id": f"99.{int(time.time())}.trigger",
        "view": {**view, "private_metadata": metadata, "state": {"values": {}}},
    }


def _token_modal(bot: Bot, fake: FakeSlack) -> dict[str, Any]:
    opened = len(fake.calls_to("views.open"))
    bot.command(ADMIN, "token Jamf Pro")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    return bot.opened_view()


def test_a_replayed_submission_issues_one_token(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    view = _token_modal(bot, fake)
    payload = _submission(ADMIN, view, view["private_metadata"])
    uploads, signed_at = len(fake.uploads), int(time.time())
    first = bot.interactive(payload, timestamp=signed_at)
    assert first.json()["response_action"] == "update"
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    replay = bot.interactive(payload, timestamp=signed_at)  # the same signed request, again
    assert (replay.status, replay.body) == (200, "")
    time.sleep(0.5)
    assert len(fake.uploads) == uploads + 1
    with bot.ctx.unit_of_work(readonly=True) as session:
        assert sorted(t.status for t in issuance.list_tokens(session)) == ["active", "superseded"]


def test_a_replayed_button_press_opens_one_modal(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": ADMIN, "team_id": TEAM},
        "trigger_id": f"77.{int(time.time())}.trigger",
        "container": {"type": "view", "view_id": "VHOME"},
        "actions": [
            {
                "type": "button",
                "action_id": "server_token",
                "value": str(server_id(bot, "Jamf Pro")),
            }
        ],
    }
    signed_at, opened = int(time.time()), len(fake.calls_to("views.open"))
    for _ in range(3):
        assert bot.interactive(payload, timestamp=signed_at).status == 200
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    time.sleep(0.5)
    assert len(fake.calls_to("views.open")) == opened + 1


@pytest.mark.parametrize("tamper", ["unsigned", "edited", "other key"])
def test_forged_or_edited_private_metadata_is_refused(
    bot: Bot, fake: FakeSlack, tamper: str
) -> None:
    add_server(bot, fake)
    add_server(bot, fake, "Mosyle")
    view = _token_modal(bot, fake)
    sealed = view["private_metadata"]
    mac, _, text = sealed.partition(".")
    meta = json.loads(text)
    aimed = {**meta, "server_id": server_id(bot, "Mosyle"), "channel": "C0GENERAL", "ts": "1.0"}
    metadata = {
        "unsigned": json.dumps(aimed),
        "edited": mac + "." + json.dumps(aimed, separators=(",", ":")),
        "other key": seal(b"k" * 32, json.dumps(aimed)),
    }[tamper]
    uploads = len(fake.uploads)
    reply = bot.interactive(_submission(ADMIN, view, metadata))
    assert reply.status == 200
    assert "could not be verified" in reply.body
    time.sleep(0.3)
    assert len(fake.uploads) == uploads
    assert not fake.calls_to("chat.update")


def test_a_renew_button_outside_the_alert_channel_edits_nothing(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    [token] = active_tokens(bot)
    posted = bot.svc.gateway.post("C0GENERAL", "not an alert", None)
    message = {"ts": posted.ts, "channel": "C0GENERAL", "text": "not an alert"}
    uploads = len(fake.uploads)
    press_on(bot, fake, ADMIN, message, "renew_token", str(token))
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    bot.wait_idle(lambda: active_tokens(bot) != [token])
    time.sleep(0.5)
    assert [c.params.get("channel") for c in fake.calls_to("chat.update")] == []
    assert fake.messages_in("C0GENERAL")[0]["text"] == "not an alert"


def test_socket_mode_presses_are_not_mistaken_for_replays(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    app = build_app(bot.svc, signing_secret=None)
    opened = len(fake.calls_to("views.open"))
    for n in range(2):
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": ADMIN, "team_id": TEAM},
            "trigger_id": f"5{n}.{int(time.time())}.trigger",
            "actions": [
                {
                    "type": "button",
                    "action_id": "server_token",
                    "value": str(server_id(bot, "Jamf Pro")),
                }
            ],
        }
        app.dispatch(BoltRequest(body=payload, mode="socket_mode"))
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) == opened + 2)
