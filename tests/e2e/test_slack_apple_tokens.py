"""Apple mode in Slack: a token from Apple School Manager dropped in the bot's DM, uploaded in
the modal `/mdm token NAME` opens, and the "Upload token" button on a server waiting for one."""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.cli.token_files import token_import
from bot.slack.builders import modals, phrases
from bot.slack.sweeper import Sweeper
from core.apple.refusals import TokenRefused
from core.models import Token
from core.roles import Actor
from core.tokens.servers import add_server, find_server
from core.tokens.token_file import envelope, generate_credentials, render_content, token_filename
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_cli import _valid_now
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, cert_file_state

ROOT = Actor("root", operator=True)
cert = functools.cache(_valid_now)  # one certificate per index for the whole test


PORTALS = {"school": "Apple School Manager", "business": "Apple Business"}
BOTH_APIS = pytest.mark.parametrize("apple_bot", list(PORTALS), indirect=True)


@pytest.fixture
def apple_bot(fake: FakeSlack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bot]:
    """The bot in Apple mode (School Manager, or the API the test asks for) with two servers,
    each with its certificate and no token yet."""
    running = Bot(
        fake, f"sqlite:///{tmp_path / 'bot.db'}", str(tmp_path),
        extra_env={"mdmbot_apple_api": getattr(request, "param", "school")},
    )  # fmt: skip
    running.grant(ADMIN)
    with running.ctx.unit_of_work() as session:
        for name, index in (("School One", 0), ("School Two", 3)):
            add_server(session, running.ctx.vault, ROOT, name=name, release_devices=True,
                       certificate=cert(index, "mdm.example.edu").pem,
                       now=running.clock())  # fmt: skip
            server = find_server(session, name)
            server.apple_id = f"APPLE{index}"  # as the sync links it to Apple's server
            session.add(server)
    yield running
    running.stop()


def _token(bot: Bot, index: int, name: str) -> tuple[str, bytes]:
    """A token file as Apple School Manager gives it, for certificate `index`."""
    now = bot.clock() - timedelta(minutes=5)
    recipient = cert(index, "mdm.example.edu").certificate
    return token_filename(name, now), envelope(render_content(generate_credentials(now)), recipient)


def _drop(bot: Bot, fake: FakeSlack, user: str, name: str, content: bytes, n: int) -> str:
    """Share a file in the user's DM with the bot; return the DM channel."""
    channel = fake.dm_channel_for(user)
    file = fake.add_private_file(content, name=name, user=user)
    event = {
        "type": "message", "subtype": "file_share", "channel_type": "im", "user": user,
        "channel": channel, "text": "", "ts": f"17000000{n}.000100", "files": [file],
    }  # fmt: skip
    assert bot.event(event, event_id=f"Ev0DROP{n}").status == 200
    return channel


def _said(fake: FakeSlack, channel: str, count: int) -> list[str]:
    fake.wait_for(lambda: len(fake.messages_in(channel)) >= count, 15)
    return [m.get("text", "") + json.dumps(m.get("blocks", [])) for m in fake.messages_in(channel)]


def _active(bot: Bot, name: str) -> tuple[str, str] | None:
    """The source and downloader of the server's active token."""
    with bot.ctx.unit_of_work(readonly=True) as session:
        server = find_server(session, name)
        token = session.exec(
            select(Token).where(Token.server_id == server.id, Token.status == "active")
        ).first()
        return (token.source, token.downloaded_by) if token else None


def test_a_token_dropped_in_the_dm_is_taken_in_for_its_server(
    apple_bot: Bot, fake: FakeSlack
) -> None:
    bot = apple_bot
    dm = _drop(bot, fake, ADMIN, "notes.p7m", b"hello\n", 1)
    assert "is not a server token" in _said(fake, dm, 1)[0]
    name, content = _token(bot, 3, "School Two")
    _drop(bot, fake, ADMIN, name, content, 2)
    said = _said(fake, dm, 2)[1]
    assert "Took in" in said and "School Two" in said and "active token" in said
    assert _active(bot, "School Two") == ("apple", ADMIN)
    assert _active(bot, "School One") is None

    other = _drop(bot, fake, STRANGER, *_token(bot, 0, "School One"), 3)
    assert ":no_entry:" in _said(fake, other, 1)[0]
    assert _active(bot, "School One") is None, "a stranger's file changes nothing"
    unknown = _token(bot, 5, "Elsewhere")
    _drop(bot, fake, ADMIN, *unknown, 4)
    assert "No MDM server in mdmbot has the certificate" in _said(fake, dm, 3)[2]


def test_mdm_token_opens_the_upload_modal_which_checks_the_recipient(
    apple_bot: Bot, fake: FakeSlack
) -> None:
    bot = apple_bot
    assert bot.command(ADMIN, "token School One").status == 200
    bot.wait_idle(lambda: bool(fake.calls_to("views.open")))
    view = bot.opened_view()
    assert view["callback_id"] == modals.APPLE_TOKEN
    wrong = fake.add_private_file(_token(bot, 3, "School Two")[1], name="x_smime.p7m")
    values: dict[str, Any] = {modals.APPLE_FILE: {"type": "file_input", "files": [wrong]}}
    reply = bot.submit(ADMIN, view, values, view["id"])
    errors = reply.json()["errors"][modals.APPLE_FILE]
    assert "encrypted to another certificate" in errors and "School One" in errors
    assert _active(bot, "School One") is None
    again = bot.submit(ADMIN, view, values, view["id"]).json()["errors"][modals.APPLE_FILE]
    assert again == errors, "a retry of the same file is refused the same way"
    refused = "A token file for *School One* was refused"
    bot.wait_idle(lambda: bool(posts(fake)))
    alerts = [m["text"] for m in posts(fake)]
    assert len(alerts) == 1 and refused in alerts[0] and f"<@{ADMIN}>" in alerts[0], alerts
    assert "x_smime.p7m” is encrypted to another certificate" in alerts[0]
    bot.svc.refresh_home(ADMIN)
    assert refused in json.dumps(fake.calls_to("views.publish")[-1].params)
    name, content = _token(bot, 0, "School One")
    right = fake.add_private_file(content, name=name)
    values = {modals.APPLE_FILE: {"type": "file_input", "files": [right]}}
    reply = bot.submit(ADMIN, view, values, view["id"])
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(lambda: "Took in" in json.dumps(fake.views[view["id"]]), timeout=15)
    assert _active(bot, "School One") == ("apple", ADMIN)
    bot.svc.refresh_home(ADMIN)
    assert refused not in json.dumps(fake.calls_to("views.publish")[-1].params)
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    assert sum(refused in m["text"] for m in posts(fake)) == 1, "alerted once"


def _portal(bot: Bot) -> str:
    """Apple's portal in the words of the bot's mode; fails on a leftover of the other's."""
    portal = bot.ctx.settings.apple_portal
    assert portal == PORTALS[bot.ctx.settings.mdmbot_apple_api or "school"]
    return portal


def _in_words_of(portal: str, *texts: str) -> None:
    """Each text names `portal` and, in Apple Business, never Apple School Manager."""
    for text in texts:
        assert portal in text, text
        assert portal == PORTALS["school"] or "School Manager" not in text, text


@BOTH_APIS
def test_the_home_asks_for_a_token_from_apple_and_its_button_opens_the_modal(
    apple_bot: Bot, fake: FakeSlack
) -> None:
    bot, portal = apple_bot, _portal(apple_bot)
    reply = bot.command(ADMIN, "show School One")
    shown = json.dumps(reply.json(), ensure_ascii=False)
    assert f"waiting for a token from {portal}" in shown
    bot.svc.refresh_home(ADMIN)
    home = json.dumps(fake.calls_to("views.publish")[-1].params, ensure_ascii=False)
    listed = json.dumps(bot.command(ADMIN, "list").json(), ensure_ascii=False)
    _in_words_of(portal, shown, home, listed)
    assert phrases.FROM_APPLE in shown and "Renew token" not in shown
    with bot.ctx.unit_of_work(readonly=True) as session:
        server_id = find_server(session, "School One").id
    before = len(fake.calls_to("views.open"))
    assert bot.press(STRANGER, phrases.FROM_APPLE, str(server_id)).status == 200
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > before)
    assert "callback_id" not in bot.opened_view() or (
        bot.opened_view().get("callback_id") != modals.APPLE_TOKEN
    ), "a stranger is told why, not given the modal"
    assert bot.press(ADMIN, "server_token", str(server_id)).status == 200
    bot.wait_idle(lambda: bot.opened_view().get("callback_id") == modals.APPLE_TOKEN)
    assert "School One" in json.dumps(bot.opened_view()["blocks"])
    _in_words_of(portal, json.dumps(bot.opened_view()["blocks"]))


@BOTH_APIS
def test_a_departure_asks_apple_for_a_new_token_and_closes_when_apple_sees_it_used(
    apple_bot: Bot, fake: FakeSlack
) -> None:
    bot, portal = apple_bot, _portal(apple_bot)
    leaver = "ULEAVER01"
    fake.add_user(leaver, "lee", "lee@school.example")
    bot.grant(leaver)
    dm = _drop(bot, fake, leaver, *_token(bot, 0, "School One"), 5)
    assert "Took in" in _said(fake, dm, 1)[0]
    bot.clock.now += timedelta(days=2)
    assert bot.command(ADMIN, f"offboard <@{leaver}|lee>").status == 200
    bot.wait_idle(lambda: bool(posts(fake)))
    checklist = posts(fake)[0]
    text = json.dumps(checklist["blocks"], ensure_ascii=False)
    assert "Upload token" in text and "Renew token" not in text
    assert "Renew and install" not in text
    assert f"until a new one from {portal} is taken in here" in text
    assert checklist["text"].endswith(f" left — get 1 new server token from {portal}")
    assert "renewed here" not in text
    (item,) = [b for b in checklist["blocks"] if b.get("accessory")]
    waiting = f"School One* is waiting for a token from {portal}"
    shown = json.dumps(bot.command(ADMIN, "show School One").json(), ensure_ascii=False)
    assert f"🟡 *{waiting}: a checklist asks to replace the one <@{leaver}>" in shown
    listed = json.dumps(bot.command(ADMIN, "list").json(), ensure_ascii=False)
    assert f"🟡 *School One* — waiting for a token from {portal}" in listed
    bot.svc.refresh_home(ADMIN)
    home = json.dumps(fake.calls_to("views.publish")[-1].params, ensure_ascii=False)
    assert waiting in home
    _in_words_of(portal, text, checklist["text"], shown, listed, home)
    press_upload(bot, fake, checklist, item["accessory"]["value"])
    assert bot.opened_view()["callback_id"] == modals.APPLE_TOKEN

    _drop(bot, fake, ADMIN, *_token(bot, 0, "School One"), 6)
    assert "Took in" in _said(fake, fake.dm_channel_for(ADMIN), 1)[0]
    assert "waiting for a token" not in json.dumps(bot.command(ADMIN, "show School One").json())
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    assert ":white_check_mark:" not in json.dumps(fake.messages_in("C0ALERTS")[-1]["blocks"])
    with bot.ctx.unit_of_work() as session:
        server = find_server(session, "School One")
        server.apple_last_connected_at = bot.clock() + timedelta(minutes=1)  # as the sync reads
        session.add(server)
    bot.clock.now += timedelta(minutes=5)
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    bot.wait_idle(lambda: bool(fake.calls_to("chat.update")))
    edited = fake.calls_to("chat.update")[-1].params
    assert "Done: every token has been renewed" in json.dumps(edited["blocks"])
    bot.svc.refresh_home(ADMIN)
    home = json.dumps(fake.calls_to("views.publish")[-1].params, ensure_ascii=False)
    assert "Upload token" in home and "Renew token" not in home, "the ⋯ menu says what it does"


def posts(fake: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in fake.messages_in("C0ALERTS") if not m.get("ephemeral")]


def press_upload(bot: Bot, fake: FakeSlack, message: dict[str, Any], value: str) -> None:
    opened = len(fake.calls_to("views.open"))
    container = {"type": "message", "message_ts": message["ts"],
                 "channel_id": message["channel"], "is_ephemeral": False}  # fmt: skip
    bot.press(ADMIN, "rotate_token", value, container=container, message=message)
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)


def test_a_token_two_servers_could_hold_asks_which_server(apple_bot: Bot, fake: FakeSlack) -> None:
    bot = apple_bot
    with bot.ctx.unit_of_work() as session:  # NanoDEP-like: another server, the same certificate
        add_server(session, bot.ctx.vault, ROOT, name="School Three", release_devices=True,
                   certificate=cert(0, "mdm.example.edu").pem, now=bot.clock())  # fmt: skip
    dm = _drop(bot, fake, ADMIN, *_token(bot, 0, "School One"), 7)
    question = fake.messages_in(dm)[0] if _said(fake, dm, 1) else {}
    assert "Several MDM servers" in question["text"]
    (choices,) = [b for b in question["blocks"] if b.get("type") == "actions"]
    labels = [e["text"]["text"] for e in choices["elements"]]
    assert labels == ["For School One", "For School Three"]
    assert _active(bot, "School One") is None and _active(bot, "School Three") is None
    chosen = choices["elements"][1]
    payload_message = {**question, "channel": dm}
    bot.press(ADMIN, chosen["action_id"], chosen["value"], block_id=choices["block_id"],
              message=payload_message)  # fmt: skip
    said = _said(fake, dm, 2)[1]
    assert "Took in" in said and "School Three" in said
    assert _active(bot, "School Three") == ("apple", ADMIN) and _active(bot, "School One") is None


@pytest.mark.parametrize("mode", ["apple", "sandbox"])
def test_other_dm_messages_are_answered_and_ignored(
    mode: str, apple_bot: Bot, bot: Bot, fake: FakeSlack
) -> None:
    running = apple_bot if mode == "apple" else bot
    channel = fake.dm_channel_for(ADMIN)
    hello = {"type": "message", "channel_type": "im", "user": ADMIN, "channel": channel,
             "text": "hello", "ts": "1700000100.000100"}  # fmt: skip
    assert running.event(hello, event_id=f"Ev0HELLO{mode}").status == 200
    if mode == "sandbox":
        name, content = _token(running, 0, "School One")
        _drop(running, fake, ADMIN, name, content, 9)
    time.sleep(0.5)  # what a listener would have said by now
    assert fake.messages_in(channel) == [], "nothing said, nothing taken in"


def test_no_token_is_issued_and_a_new_certificate_is_kept_for_the_check(
    apple_bot: Bot, fake: FakeSlack
) -> None:
    bot = apple_bot
    with bot.ctx.unit_of_work(readonly=True) as session:
        server_id = find_server(session, "School One").id
    meta = bot.metadata({"server_id": server_id, "expects": None})
    confirm = {"callback_id": modals.CONFIRM_TOKEN, "private_metadata": meta}
    reply = bot.submit(ADMIN, confirm, {})
    assert "issues no tokens" in json.dumps(reply.json()) and _active(bot, "School One") is None
    replace = {"callback_id": modals.REPLACE_CERT, "private_metadata": meta}
    new = cert(6, "mdm.example.edu")
    refused = bot.submit(STRANGER, replace, {"certificate": cert_file_state(fake, new.pem)})
    assert refused.json()["response_action"] == "errors"
    reply = bot.submit(ADMIN, replace, {"certificate": cert_file_state(fake, new.pem)})
    assert "now checks the tokens" in json.dumps(reply.json())
    dm = _drop(bot, fake, ADMIN, *_token(bot, 0, "School One"), 10)
    assert "No MDM server in mdmbot has the certificate" in _said(fake, dm, 1)[0]
    _drop(bot, fake, ADMIN, *_token(bot, 6, "School One"), 11)
    assert "Took in" in _said(fake, dm, 2)[1]
    assert _active(bot, "School One") == ("apple", ADMIN)


def test_a_file_the_command_line_refused_is_alerted_once_by_the_sweep(
    apple_bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    bot = apple_bot
    wrong = tmp_path / "wrong_smime.p7m"
    wrong.write_bytes(_token(bot, 0, "School One")[1])
    args = argparse.Namespace(name="School Two", file=str(wrong), actor="U0CLI", yes=True)
    for _ in range(2):
        with pytest.raises(TokenRefused, match="encrypted to another certificate"):
            token_import(bot.ctx, args)
    assert _active(bot, "School Two") is None
    sweeper = Sweeper(bot.svc, post_interval=0)
    fake.fail_next("chat.postMessage")
    assert sweeper.sweep(bot.clock()).alerts_failed == 1
    sweeper.sweep(bot.clock())
    sweeper.sweep(bot.clock())
    alerts = [m["text"] for m in posts(fake) if "was refused" in m["text"]]
    assert len(alerts) == 1 and "*School Two*" in alerts[0] and "<@U0CLI>" in alerts[0], alerts


def test_a_token_imported_on_the_command_line_is_offered_by_dm_to_its_downloader(
    apple_bot: Bot, fake: FakeSlack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bot = apple_bot
    name, content = _token(bot, 0, "School One")
    (tmp_path / name).write_bytes(content)
    args = argparse.Namespace(name="School One", file=str(tmp_path / name), actor=ADMIN, yes=True)
    assert token_import(bot.ctx, args) == 0
    said = capsys.readouterr().out
    assert f"{ADMIN} can have it by DM with “Send me the file again” on mdmbot's App Home" in said
    bot.svc.refresh_home(ADMIN)
    home = json.dumps(fake.calls_to("views.publish")[-1].params)
    assert "Send me the file again* puts it in their DMs" in home and "resend_token" in home
    assert "the file is in their DMs" not in home
    with bot.ctx.unit_of_work(readonly=True) as session:
        token_id = session.exec(select(Token.id).where(Token.status == "active")).one()
    assert bot.press(ADMIN, "resend_token", str(token_id)).status == 200
    bot.wait_idle(lambda: bool(fake.calls_to("files.completeUploadExternal")))
    shared = fake.calls_to("files.completeUploadExternal")[-1].params
    assert name in json.dumps(shared) and fake.dm_channel_for(ADMIN) in json.dumps(shared)


def test_an_expired_file_dropped_twice_is_alerted_once(apple_bot: Bot, fake: FakeSlack) -> None:
    bot = apple_bot
    old = token_filename("School One", bot.clock() - timedelta(days=400))
    content = _token(bot, 0, "School One")[1]
    dm = _drop(bot, fake, ADMIN, old, content, 7)
    _drop(bot, fake, ADMIN, old, content, 8)
    said = _said(fake, dm, 2)
    assert all(":no_entry:" in s and "expired" in s for s in said), said
    bot.wait_idle(lambda: bool(posts(fake)))
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    alerts = [m["text"] for m in posts(fake) if "was refused" in m["text"]]
    assert len(alerts) == 1 and "*School One*" in alerts[0] and "expired" in alerts[0], alerts
    assert _active(bot, "School One") is None
