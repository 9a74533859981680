"""The fake Slack Web API behaves like Slack when driven by the real slack_sdk WebClient."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from tests.fakeslack import FakeSlack, make_client


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
