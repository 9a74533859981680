"""mdmbot's Slack client keeps one connection open across calls, and errors keep their meaning."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from slack_sdk.errors import SlackApiError

from bot import keepalive
from bot.slack.gateway import SlackGateway, SlackUnavailable, make_client
from tests.fakeslack import FakeSlack

TOKEN = "xoxb-test-token"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A fake Slack with one channel."""
    f = FakeSlack(bot_token=TOKEN).start()
    f.add_channel("C0ALERTS", "mdm-alerts")
    yield f
    f.stop()


def test_calls_share_one_connection(fake: FakeSlack) -> None:
    """Twenty posts in a row reach Slack over one TCP connection, each posted once."""
    client = make_client(TOKEN, fake.url)
    for n in range(20):
        assert client.chat_postMessage(channel="C0ALERTS", text=f"post {n}")["ok"]
    assert fake.connections_accepted == 1
    assert [m["text"] for m in fake.messages] == [f"post {n}" for n in range(20)]


@pytest.mark.parametrize("idle", ["moments", "longer"])
def test_a_connection_slack_closed_is_replaced_without_a_repeated_call(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, idle: str
) -> None:
    """After Slack hangs up an idle connection, the next call opens a new one and is sent once:
    found closed before the call (idle longer than `FRESH`), or retried after it failed."""
    if idle == "longer":
        monkeypatch.setattr(keepalive, "FRESH", 0.0)
    client = make_client(TOKEN, fake.url)
    client.chat_postMessage(channel="C0ALERTS", text="before")
    fake.hang_up()
    time.sleep(0.05)
    client.chat_postMessage(channel="C0ALERTS", text="after")
    assert fake.connections_accepted == 2
    assert [m["text"] for m in fake.messages] == ["before", "after"]
    assert len(fake.calls_to("chat.postMessage")) == 2


def test_rate_limits_and_server_errors_are_still_retried_on_the_same_connection(
    fake: FakeSlack,
) -> None:
    """429 with Retry-After and 5xx reach slack_sdk's retry handlers as urllib raises them."""
    client = make_client(TOKEN, fake.url)
    fake.rate_limit_next("chat.postMessage", retry_after=0, times=2)
    assert client.chat_postMessage(channel="C0ALERTS", text="x")["ok"]
    assert len(fake.calls_to("chat.postMessage")) == 3 and len(fake.messages) == 1
    fake.fail_next("chat.update", status=503, times=3)
    with pytest.raises(SlackApiError) as failed:
        client.chat_update(channel="C0ALERTS", ts="1.2", text="y")
    assert failed.value.response.status_code == 503
    assert len(fake.calls_to("chat.update")) == 3  # one call and ServerErrorRetryHandler's two
    assert fake.connections_accepted == 1


def test_slack_down_is_unreachable_not_a_crash() -> None:
    """A refused connection is SlackUnavailable('unreachable') after the SDK's retries."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{sock.getsockname()[1]}/api/"
    gateway = SlackGateway(make_client(TOKEN, api), api, metadata_key=b"k" * 32)
    with pytest.raises(SlackUnavailable) as down:
        gateway.check_token()
    assert down.value.error == "unreachable"


def test_a_forked_worker_opens_its_own_connection(fake: FakeSlack) -> None:
    """gunicorn forks workers after the master checked the token: a child never writes on the
    master's socket, and the master's connection still works after the child is gone."""
    client = make_client(TOKEN, fake.url)
    assert client.auth_test()["ok"]
    pid = os.fork()
    if pid == 0:  # the child: one call of its own, then leave without running pytest's exit
        code = 1
        try:
            posted = client.chat_postMessage(channel="C0ALERTS", text="from the child")
            code = 0 if posted["ok"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.chat_postMessage(channel="C0ALERTS", text="from the parent")["ok"]
    assert fake.connections_accepted == 2
    assert [m["text"] for m in fake.messages] == ["from the child", "from the parent"]


def test_a_proxy_setting_sends_calls_through_the_proxy(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, calls go through the proxy (slack_sdk's urllib transport)."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.root)  # the fake answers absolute-form requests too
    client = make_client(TOKEN, "http://slack.invalid/api/")
    assert client.chat_postMessage(channel="C0ALERTS", text="proxied")["ok"]
    assert [m["text"] for m in fake.messages] == ["proxied"]
