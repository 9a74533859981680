"""Drive the running bot over real HTTP with signed, Slack-shaped requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from bot import metrics
from bot.context import AppContext
from bot.http import HttpServer, Listener, SlackWsgi, every_request
from bot.runtime import Runtime
from bot.serve import slack_listener
from bot.slack.app import build_app, build_services
from bot.slack.services import BotServices
from core.people import persons as people
from core.roles import Role
from core.sealing import seal
from core.settings import Settings
from tests.fakemdm import ALLOW_LOOPBACK
from tests.fakeslack import FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0001"


@dataclass
class Reply:
    """An HTTP answer from the bot."""

    status: int
    body: str
    elapsed: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body) if self.body else None


@dataclass
class Clock:
    """A settable clock for the bot."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class Bot:
    """A running mdmbot HTTP server wired to a fake Slack."""

    def __init__(
        self,
        fake: FakeSlack,
        database_url: str,
        data_dir: str,
        *,
        clock: Clock | None = None,
        alert_channel: str = "C0ALERTS",
        extra_env: dict[str, Any] | None = None,
    ) -> None:
        self.fake = fake
        self.clock = clock or Clock()
        settings = Settings(
            slack_bot_token=fake.bot_token,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=fake.url,
            mdmbot_database_url=database_url,
            mdmbot_data_dir=data_dir,
            mdmbot_alert_channel=alert_channel,
            mdmbot_secret_key="k" * 40,
            **{"mdmbot_mdm_allow_networks": ALLOW_LOOPBACK, **(extra_env or {})},
        )
        self.ctx = AppContext(settings, clock=self.clock)
        self.ctx.prepare_database()
        self.svc: BotServices = build_services(self.ctx)
        self.runtime = Runtime(self.ctx, self.svc, scheduler=False)
        self.app = build_app(self.svc, signing_secret=None)
        self.runtime.start()
        wsgi = SlackWsgi(self.app, self.runtime.health, signing_secret=SIGNING_SECRET)
        slack = slack_listener("127.0.0.1", 0, wsgi, self.svc)  # as `serve --http` has it
        metrics_listener = Listener("metrics", "127.0.0.1", 0, metrics.wsgi, on_loop=every_request)
        self.server = HttpServer([slack, metrics_listener], 8)
        self.url = f"http://127.0.0.1:{self.server.ports['slack']}"
        self.metrics_url = f"http://127.0.0.1:{self.server.ports['metrics']}"
        self.server.start_in_background("test-bot")
        self._seq = 0

    def stop(self) -> None:
        """Stop the HTTP server."""
        self.server.close()
        self.runtime.stop()
        self.ctx.engine.dispose()

    def metadata(self, data: dict[str, Any]) -> str:
        """private_metadata as mdmbot signs it when it opens a modal."""
        return seal(self.svc.gateway.metadata_key, json.dumps(data, separators=(",", ":")))

    def grant(self, user: str, role: Role = Role.ADMINISTRATOR) -> None:
        """Give a Slack user a role directly in the database."""
        from core.roles import Actor

        with self.ctx.unit_of_work() as session:
            people.grant_role(session, Actor("test", operator=True), user, role, self.clock())

    # ----- raw requests -----
    def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """POST a signed body to /slack/events."""
        ts = int(time.time()) if timestamp is None else timestamp
        request = urllib.request.Request(
            f"{self.url}/slack/events",
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": sign(body, ts, secret),
                **(headers or {}),
            },
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(
                    response.status, response.read().decode(), time.perf_counter() - started
                )
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(), time.perf_counter() - started)

    def get(self, path: str, *, base: str | None = None) -> Reply:
        """GET a path on the bot (on its Slack listener unless `base` names another)."""
        try:
            with urllib.request.urlopen(f"{base or self.url}{path}", timeout=10) as response:
                return Reply(response.status, response.read().decode(), 0.0)
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(), 0.0)

    def _trigger(self) -> str:
        self._seq += 1
        return f"{self._seq}.{int(time.time())}.trigger"

    # ----- Slack-shaped payloads -----
    def command(self, user: str, text: str, *, channel: str = "C0GENERAL", **kw: Any) -> Reply:
        """A `/mdm` slash command."""
        form = {
            "token": "deprecated",
            "team_id": TEAM,
            "team_domain": "school",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/mdm",
            "text": text,
            "api_app_id": "A0MDMBOT",
            "is_enterprise_install": "false",
            "response_url": self.fake.response_url(str(self._seq)),
            "trigger_id": self._trigger(),
        }
        return self.post(urlencode(form), "application/x-www-form-urlencoded", **kw)

    def interactive(self, payload: dict[str, Any], **kw: Any) -> Reply:
        """An interactivity payload (form-encoded `payload=` JSON)."""
        return self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", **kw
        )

    def submit(
        self, user: str, view: dict[str, Any], values: dict[str, Any], view_id: str = "V0000001"
    ) -> Reply:
        """Submit a modal with `values` as state (block_id -> action state)."""
        submitted = {
            "type": "modal",
            "private_metadata": "",
            **view,
            "id": view_id,
            "team_id": TEAM,
            "hash": "1.abc",
            "state": {"values": {bid: {"value": state} for bid, state in values.items()}},
        }
        return self.interactive(
            {
                "type": "view_submission",
                "team": {"id": TEAM},
                "user": {"id": user, "username": user.lower(), "team_id": TEAM},
                "api_app_id": "A0MDMBOT",
                "trigger_id": self._trigger(),
                "view": submitted,
            }
        )

    def press(
        self,
        user: str,
        action_id: str,
        value: str,
        *,
        block_id: str = "b",
        container: dict[str, Any] | None = None,
        message: dict[str, Any] | None = None,
    ) -> Reply:
        """Press a button."""
        payload: dict[str, Any] = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM},
            "api_app_id": "A0MDMBOT",
            "trigger_id": self._trigger(),
            "container": container or {"type": "view", "view_id": "VHOME"},
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if message is not None:
            payload["message"] = message
            payload["channel"] = {"id": message["channel"]}
        return self.interactive(payload)

    def shortcut(self, user: str, callback_id: str) -> Reply:
        """A global shortcut."""
        return self.interactive(
            {
                "type": "shortcut",
                "token": "x",
                "action_ts": "1.2",
                "team": {"id": TEAM},
                "user": {"id": user, "team_id": TEAM},
                "callback_id": callback_id,
                "trigger_id": self._trigger(),
            }
        )

    def event(self, event: dict[str, Any], *, event_id: str, retry_num: int | None = None) -> Reply:
        """An Events API delivery (optionally marked as Slack's retry)."""
        body = json.dumps(
            {
                "token": "x",
                "team_id": TEAM,
                "api_app_id": "A0MDMBOT",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "event": event,
            }
        )
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return self.post(body, "application/json", headers=headers)

    def opened_view(self) -> dict[str, Any]:
        """The modal most recently opened by the bot, as Slack stored it (with its id)."""
        return dict(list(self.fake.views.values())[-1])

    def wait_idle(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for work done after ack()."""
        self.fake.wait_for(predicate, timeout)


def cert_file_state(fake: FakeSlack, content: bytes, name: str = "mdm.pem") -> dict[str, Any]:
    """The `file_input` state Slack sends for one uploaded file."""
    file = fake.add_private_file(content, name=name)
    return {"type": "file_input", "files": [file]}
