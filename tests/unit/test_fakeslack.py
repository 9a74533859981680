"""The fake Slack Web API behaves like Slack when driven by the real slack_sdk WebClient."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from io import BufferedReader
from typing import Any
from urllib.parse import urlsplit

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from tests.fakeslack import FakeSlack, make_client
from tests.fakeslack_socket import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    encode_frame,
    read_frame,
)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """Run a fake with two users and an alert channel."""
    f = FakeSlack().start()
    f.add_user("U1", "Ada", "ada@example.com")
    f.add_user("U2", "Bob")
    f.add_channel("C0ALERTS", "mdm-alerts")
    yield f
    f.stop()


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    """Return a WebClient pointed at the fake."""
    return make_client(fake)


def _fetch(url: str, data: bytes | None = None, token: str | None = None,
           ) -> tuple[int, str, bytes]:
    """Fetch a URL from the fake; return status, content type and body (HTTP errors too)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def _error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    """Return the Slack error code of a SlackApiError."""
    return str(exc.value.response["error"])


def test_auth_test_and_token_checks(fake: FakeSlack, client: WebClient) -> None:
    """auth.test answers with the bot identity; missing or wrong tokens are refused."""
    r = client.auth_test()
    assert (r["user_id"], r["bot_id"], r["team_id"]) == ("UBOT", "BBOT", "T0001")
    with pytest.raises(SlackApiError) as exc:
        WebClient(base_url=fake.url).auth_test()
    assert _error(exc) == "not_authed"
    with pytest.raises(SlackApiError) as exc:
        WebClient(token="xoxb-wrong", base_url=fake.url).chat_postMessage(
            channel="C0ALERTS", text="x"
        )
    assert _error(exc) == "invalid_auth"
    assert exc.value.response.status_code == 200
    assert [c.token for c in fake.calls] == ["xoxb-test-token", None, "xoxb-wrong"]
    assert fake.messages == []


def test_conversations_open_gives_stable_dm_ids(fake: FakeSlack, client: WebClient) -> None:
    """Each user gets one stable D… channel; unknown users are refused."""
    d1 = client.conversations_open(users="U1")["channel"]["id"]
    again = client.conversations_open(users=["U1"])
    assert d1.startswith("D") and again["channel"]["id"] == d1 == fake.dm_channel_for("U1")
    assert again["already_open"] is True
    assert client.conversations_open(users="U2")["channel"]["id"] != d1
    with pytest.raises(SlackApiError) as exc:
        client.conversations_open(users="U404")
    assert _error(exc) == "user_not_found"


def test_post_and_update_message(fake: FakeSlack, client: WebClient) -> None:
    """chat.postMessage stores the message with a unique ts; chat.update edits it in place."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    a = client.chat_postMessage(channel="C0ALERTS", text="hi", blocks=blocks)
    b = client.chat_postMessage(channel="C0ALERTS", text="second", thread_ts=a["ts"])
    assert float(b["ts"]) > float(a["ts"]) and a["message"]["blocks"] == blocks
    client.chat_update(channel="C0ALERTS", ts=a["ts"], text="done")
    first = fake.messages_in("C0ALERTS")[0]
    assert first["text"] == "done" and first["blocks"] == blocks
    assert first["history"] == [{"text": "hi", "blocks": blocks}]
    assert fake.messages_in("C0ALERTS")[1]["thread_ts"] == a["ts"]
    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: client.chat_update(channel="C0ALERTS", ts="1.000001", text="x"),
            "message_not_found",
        ),
        (lambda: client.chat_postMessage(channel="C0NOPE", text="x"), "channel_not_found"),
        (lambda: client.api_call("chat.postMessage", json={"channel": "C0ALERTS"}), "no_text"),
        (lambda: client.chat_postMessage(channel="C0ALERTS", text="x" * 40001), "msg_too_long"),
    ]
    for call, code in cases:
        with pytest.raises(SlackApiError) as exc:
            call()
        assert _error(exc) == code


def test_form_encoded_posts_with_json_blocks(fake: FakeSlack, client: WebClient) -> None:
    """A form post with blocks as a JSON string is decoded; token may be a form field."""
    blocks = '[{"type": "divider"}]'
    client.api_call("chat.postMessage", data={"channel": "C0ALERTS", "blocks": blocks})
    assert fake.messages[0]["blocks"] == [{"type": "divider"}]
    assert fake.calls_to("chat.postMessage")[0].params["channel"] == "C0ALERTS"


def test_ephemeral_message(fake: FakeSlack, client: WebClient) -> None:
    """chat.postEphemeral returns message_ts and records the target user."""
    r = client.chat_postEphemeral(channel="C0ALERTS", user="U1", text="only you")
    assert fake.messages[0]["ts"] == r["message_ts"]
    assert fake.messages[0]["user"] == "U1" and fake.messages[0]["ephemeral"]


@pytest.mark.parametrize(
    ("blocks", "where"),
    [
        ([{"type": "divider"}] * 51, "/blocks"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "/blocks/0/text"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}], "/blocks/0"),
        (
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * 2001}]}],
            "/blocks/0/elements/0/text",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "a",
                            "text": {"type": "plain_text", "text": "x" * 76},
                        }
                    ],
                }
            ],
            "/blocks/0/elements/0",
        ),
    ],
)
def test_block_kit_limits(client: WebClient, blocks: list[dict[str, object]], where: str) -> None:
    """Messages breaking Block Kit limits are refused with invalid_blocks."""
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0ALERTS", text="t", blocks=blocks)
    assert _error(exc) == "invalid_blocks"
    assert where in exc.value.response["response_metadata"]["messages"][0]


def test_block_kit_limits_at_the_edge_pass(client: WebClient) -> None:
    """Exactly-at-limit content is accepted."""
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3000}},
    ]
    assert client.chat_postMessage(channel="C0ALERTS", text="t", blocks=blocks * 25)["ok"]
    context = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 2000}]}]
    assert client.chat_postMessage(channel="C0ALERTS", text="t", blocks=context)["ok"]


def _modal(title: str = "Add MDM server", **extra: object) -> dict[str, object]:
    """Build a small modal view."""
    return {
        "type": "modal",
        "callback_id": "add",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Add"},
        "blocks": [
            {
                "type": "input",
                "block_id": "name",
                "label": {"type": "plain_text", "text": "Name"},
                "element": {"type": "plain_text_input", "action_id": "v"},
            }
        ],
        **extra,
    }


def test_views_open_update_publish(fake: FakeSlack, client: WebClient) -> None:
    """Views are validated and stored; home tabs are kept per user."""
    v = client.views_open(trigger_id="123.456", view=_modal())["view"]
    assert v["id"].startswith("V") and v["hash"] and fake.views[v["id"]]["callback_id"] == "add"
    u = client.views_update(view_id=v["id"], hash=v["hash"], view=_modal("Done"))["view"]
    assert u["id"] == v["id"] and fake.views[v["id"]]["title"]["text"] == "Done"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=v["id"], hash=v["hash"], view=_modal())
    assert _error(exc) == "hash_conflict"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id="V404", view=_modal())
    assert _error(exc) == "not_found"
    home = {"type": "home", "blocks": [{"type": "divider"}]}
    client.views_publish(user_id="U1", view=home)
    assert fake.published_home["U1"]["blocks"] == [{"type": "divider"}]


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (_modal("x" * 25), "/view/title/text"),
        (_modal(private_metadata="m" * 3001), "/view/private_metadata"),
        (_modal(callback_id="c" * 256), "/view/callback_id"),
        (_modal(blocks=[{"type": "divider"}] * 101), "/view/blocks"),
        ({k: v for k, v in _modal().items() if k != "submit"}, "/view/submit"),
    ],
)
def test_views_open_limits(client: WebClient, view: dict[str, object], pointer: str) -> None:
    """Views breaking modal limits answer invalid_arguments with a json-pointer message."""
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="1.2", view=view)
    assert _error(exc) == "invalid_arguments"
    assert pointer in " ".join(exc.value.response["response_metadata"]["messages"])


def test_expired_trigger_is_injectable(fake: FakeSlack, client: WebClient) -> None:
    """fail_next simulates an expired trigger id once."""
    fake.fail_next("views.open", error="expired_trigger_id")
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="1.2", view=_modal())
    assert _error(exc) == "expired_trigger_id"
    assert client.views_open(trigger_id="1.3", view=_modal())["ok"]


def test_users_info(fake: FakeSlack, client: WebClient) -> None:
    """users.info returns profile and deleted flag; unknown users are refused."""
    user = client.users_info(user="U1")["user"]
    assert user["profile"]["email"] == "ada@example.com" and user["deleted"] is False
    fake.set_user_deleted("U1", True)
    assert client.users_info(user="U1")["user"]["deleted"] is True
    assert "email" not in client.users_info(user="U2")["user"]["profile"]
    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="U404")
    assert _error(exc) == "user_not_found"


def test_files_upload_v2_to_dm(fake: FakeSlack, client: WebClient) -> None:
    """files_upload_v2 lands the bytes in a DM and posts a message with the file."""
    dm = client.conversations_open(users="U1")["channel"]["id"]
    data = bytes(range(256)) * 3
    r = client.files_upload_v2(channel=dm, content=data, filename="x.p7m", initial_comment="hi")
    assert r["file"]["name"] == "x.p7m" and r["file"]["title"] == "x.p7m"
    [up] = fake.uploads
    assert (up["bytes"], up["channel_id"], up["initial_comment"]) == (data, dm, "hi")
    [msg] = fake.messages_in(dm)
    assert msg["text"] == "hi" and msg["files"][0]["id"] == up["file_id"]
    assert [c.method for c in fake.calls[1:]] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    assert client.files_info(file=up["file_id"])["file"]["size"] == len(data)


def test_complete_upload_refusals(fake: FakeSlack, client: WebClient) -> None:
    """Completing an un-uploaded id, or sharing to a user id, is refused."""
    fid = client.files_getUploadURLExternal(filename="a", length=3)["file_id"]
    with pytest.raises(SlackApiError) as exc:
        client.files_completeUploadExternal(files=[{"id": fid}], channel_id="C0ALERTS")
    assert _error(exc) == "file_not_found"
    with pytest.raises(SlackApiError) as exc:
        client.files_upload_v2(channel="U1", content=b"abc", filename="a")
    assert _error(exc) == "channel_not_found"
    assert fake.uploads == []


def test_upload_url_checks_length(client: WebClient) -> None:
    """The upload URL needs no auth but refuses a body whose length differs."""
    r = client.files_getUploadURLExternal(filename="a", length=3)
    assert r["upload_url"].endswith("/upload/" + r["file_id"])
    assert _fetch(r["upload_url"], b"abcd")[0] == 400
    assert _fetch(r["upload_url"], b"abc")[::2] == (200, b"OK - 3")


def test_private_download_needs_bot_token(fake: FakeSlack, client: WebClient) -> None:
    """With the bot token the bytes come back; without it, a 200 HTML sign-in page."""
    f = fake.add_private_file(b"-----BEGIN CERT", name="a b.pem", mimetype="application/x-pem")
    assert client.files_info(file=f["id"])["file"]["url_private"] == f["url_private"]
    for url in (f["url_private"], f["url_private_download"]):
        assert _fetch(url, token="xoxb-test-token") == (200, "application/x-pem",
                                                         b"-----BEGIN CERT")
        for token in (None, "xoxb-other"):
            status, ctype, body = _fetch(url, token=token)
            assert status == 200 and ctype.startswith("text/html") and b"<html" in body


def test_rate_limit_without_and_with_retry_handler(fake: FakeSlack) -> None:
    """429 + Retry-After surfaces as SlackApiError, or is retried by the SDK handler."""
    fake.rate_limit_next("chat.postMessage", retry_after=0)
    with pytest.raises(SlackApiError) as exc:
        make_client(fake).chat_postMessage(channel="C0ALERTS", text="x")
    assert exc.value.response.status_code == 429
    assert _error(exc) == "ratelimited"
    assert exc.value.response.headers["Retry-After"] in ("0", ["0"])
    retrying = make_client(fake)
    retrying.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    fake.rate_limit_next("chat.postMessage", retry_after=0, times=2)
    start = time.monotonic()
    assert retrying.chat_postMessage(channel="C0ALERTS", text="x")["ok"]
    assert time.monotonic() - start < 5
    assert len(fake.calls_to("chat.postMessage")) == 4 and len(fake.messages) == 1


def test_fail_next_with_status_500(fake: FakeSlack, client: WebClient) -> None:
    """fail_next can answer with a 5xx status, consumed in order."""
    fake.fail_next("chat.postMessage", status=500, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            client.chat_postMessage(channel="C0ALERTS", text="x")
        assert exc.value.response.status_code == 500 and _error(exc) == "internal_error"
    assert client.chat_postMessage(channel="C0ALERTS", text="x")["ok"]


def test_reset_and_wait_for(fake: FakeSlack, client: WebClient) -> None:
    """reset forgets traffic but keeps fixtures; wait_for raises on timeout."""
    dm = fake.dm_channel_for("U1")
    client.chat_postMessage(channel=dm, text="x")
    fake.wait_for(lambda: len(fake.messages) == 1)
    fake.reset()
    assert fake.calls == [] and fake.messages == [] and fake.dm_channel_for("U1") == dm
    with pytest.raises(AssertionError):
        fake.wait_for(lambda: False, timeout=0.05)


# ----- Socket Mode -----
def _ws_url(fake: FakeSlack) -> str:
    """A fresh Socket Mode URL from apps.connections.open."""
    return str(make_client(fake).apps_connections_open(app_token=fake.app_token)["url"])


def _raw_websocket(url: str) -> tuple[socket.socket, BufferedReader, str, dict[str, str]]:
    """Open a WebSocket by hand; return the socket, its reader, status line and headers (+key)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    rfile = sock.makefile("rb")
    status = rfile.readline().decode().strip()
    headers = {"key": key}
    while (line := rfile.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return sock, rfile, status, headers


def _next_frame(rfile: BufferedReader) -> tuple[int, bytes]:
    """The next frame from the server that is not one of its periodic pings."""
    while True:
        _fin, opcode, payload, masked = read_frame(rfile)
        assert not masked, "server frames are never masked"
        if opcode != OP_PING:
            return opcode, payload


def test_apps_connections_open_needs_the_app_level_token(fake: FakeSlack) -> None:
    """Only the app token opens a connection; a bot token there (or the app token elsewhere)
    is the wrong token type, and an unknown xapp token is invalid."""
    api = WebClient(base_url=fake.url)
    url = api.apps_connections_open(app_token="xapp-test")["url"]
    assert url.startswith(fake.root.replace("http://", "ws://") + "link/?ticket=")
    cases = [("apps_connections_open", {"app_token": fake.bot_token}, "not_allowed_token_type"),
             ("apps_connections_open", {"app_token": "xapp-wrong"}, "invalid_auth"),
             ("auth_test", {"token": "xapp-test"}, "not_allowed_token_type")]
    for method, kwargs, code in cases:
        with pytest.raises(SlackApiError) as exc:
            getattr(api, method)(**kwargs)
        assert _error(exc) == code
    other = FakeSlack(app_token="xapp-other").start()
    try:
        assert WebClient(base_url=other.url).apps_connections_open(app_token="xapp-other")["ok"]
    finally:
        other.stop()


def test_socket_mode_client_gets_hello_and_envelopes_and_its_acks_are_recorded(
    fake: FakeSlack,
) -> None:
    """slack_sdk's builtin client connects over ws://, gets hello, and acks what is pushed."""
    received: list[dict[str, Any]] = []

    def ack(client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        body = {"text": f"got {req.payload['text']}"} if req.accepts_response_payload else None
        client.send_socket_mode_response(SocketModeResponse(req.envelope_id, body))

    client = SocketModeClient(app_token=fake.app_token, web_client=WebClient(base_url=fake.url))
    client.message_listeners.append(lambda _c, message, _raw: received.append(message))
    client.socket_mode_request_listeners.append(ack)
    try:
        client.connect()
        fake.wait_for(lambda: fake.socket_connected() and bool(received))
        assert received[0]["type"] == "hello" and received[0]["num_connections"] == 1
        big = "x" * 70_000  # a 64-bit length frame
        command = fake.socket_send("slash_commands", {"command": "/mdm", "text": big})
        acked = fake.socket_ack(command)
        assert acked == {"envelope_id": command, "payload": {"text": f"got {big}"}}
        event = fake.socket_send("events_api", {"type": "event_callback", "text": "e"},
                                 accepts_response_payload=False)
        assert fake.socket_ack(event) == {"envelope_id": event}
        envelope = next(m for m in received if m.get("envelope_id") == event)
        assert envelope == {"envelope_id": event, "type": "events_api",
                            "payload": {"type": "event_callback", "text": "e"},
                            "accepts_response_payload": False,
                            "retry_attempt": 0, "retry_reason": ""}
        fake.reset()
        assert fake.socket_acks == {} and fake.socket_connected()
    finally:
        client.close()
    fake.wait_for(lambda: not fake.socket_connected(), timeout=2)
    with pytest.raises(RuntimeError):
        fake.socket_send("interactive", {})
    with pytest.raises(ValueError):
        fake.socket_send("hello", {})


def test_websocket_handshake_ping_pong_and_close(fake: FakeSlack) -> None:
    """RFC 6455 by hand: accept key, hello, pings both ways, close echoed; tickets are single-use
    and unmasked client frames are refused with 1002."""
    url = _ws_url(fake)
    sock, rfile, status, headers = _raw_websocket(url)
    with sock, rfile:
        assert status == "HTTP/1.1 101 Switching Protocols"
        assert headers["sec-websocket-accept"] == accept_key(headers["key"])
        opcode, payload = _next_frame(rfile)
        assert opcode == OP_TEXT and json.loads(payload)["type"] == "hello"
        assert read_frame(rfile)[1] == OP_PING, "the server pings on its own"
        sock.sendall(encode_frame(OP_PING, b"are you there", os.urandom(4)))
        assert _next_frame(rfile) == (OP_PONG, b"are you there")
        sock.sendall(encode_frame(OP_TEXT, b'{"envelope_id": "e1"}', os.urandom(4)))
        sock.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000), os.urandom(4)))
        assert _next_frame(rfile) == (OP_CLOSE, struct.pack("!H", 1000))
        assert fake.socket_acks == {"e1": {"envelope_id": "e1"}}
    sock, rfile, status, _ = _raw_websocket(url)
    with sock, rfile:
        assert status.startswith("HTTP/1.1 401"), "a ticket works once"
    sock, rfile, _, _ = _raw_websocket(_ws_url(fake))
    with sock, rfile:
        _next_frame(rfile)
        sock.sendall(encode_frame(OP_TEXT, b"{}"))
        assert _next_frame(rfile)[1][:2] == struct.pack("!H", 1002)


def test_thread_replies_and_channel_membership(fake: FakeSlack, client: WebClient) -> None:
    """reply_broadcast counts only in a thread; conversations.info tells is_member."""
    parent = client.chat_postMessage(channel="C0ALERTS", text="checklist")
    client.chat_postMessage(channel="C0ALERTS", text="quiet", thread_ts=parent["ts"])
    client.chat_postMessage(channel="C0ALERTS", text="loud", thread_ts=parent["ts"],
                            reply_broadcast=True)
    client.chat_postMessage(channel="C0ALERTS", text="top", reply_broadcast=True)
    posted = fake.messages_in("C0ALERTS")
    flags = [(m["text"], m["thread_ts"], m["reply_broadcast"]) for m in posted]
    assert flags == [("checklist", None, False), ("quiet", parent["ts"], False),
                     ("loud", parent["ts"], True), ("top", None, False)]
    assert client.conversations_info(channel="C0ALERTS")["channel"]["is_member"] is True
    fake.add_channel("C0OTHER", "elsewhere", member=False)
    assert client.conversations_info(channel="C0OTHER")["channel"]["is_member"] is False
    for call, code in [
        (lambda: client.chat_postMessage(channel="C0OTHER", text="x"), "not_in_channel"),
        (lambda: client.conversations_info(channel="C0NOPE"), "channel_not_found"),
    ]:
        with pytest.raises(SlackApiError) as exc:
            call()
        assert _error(exc) == code
