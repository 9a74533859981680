"""Scenarios: who may act, bad input inline, forged requests, Slack failures."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bot.slack.builders import modals
from core.tokens import issuance
from tests import certs
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_slack_add import add_values
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, cert_file_state


def add_server(bot: Bot, fake: FakeSlack, name: str = "Jamf Pro") -> dict[str, Any]:
    uploads, opened = len(fake.uploads), len(fake.calls_to("views.open"))
    bot.command(ADMIN, "add")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    view = bot.opened_view()
    reply = bot.submit(
        ADMIN, view, add_values(fake, name, certs.self_signed_rsa().pem), view_id=view["id"]
    )
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    bot.wait_idle(lambda: "in your DMs" in json.dumps(fake.views[view["id"]]))
    return fake.uploads[-1]


def server_id(bot: Bot, name: str) -> int:
    return bot.svc.server_by_name(name).id


def active_tokens(bot: Bot) -> list[int]:
    with bot.ctx.unit_of_work() as session:
        return [t.id for t in issuance.list_tokens(session) if t.status == "active"]


def test_stranger_gets_nothing_at_any_entry_point(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    fake.reset()
    for text in (
        "list",
        "show Jamf Pro",
        "roles",
        "add",
        "token Jamf Pro",
        "remove Jamf Pro",
        f"grant <@{STRANGER}|sam> Administrator",
    ):
        reply = bot.command(STRANGER, text)
        assert reply.status == 200
        assert "Jamf" not in reply.body.replace("Jamf Pro`", ""), text
    time.sleep(0.3)
    assert not fake.calls_to("views.open"), "no modal opens for a user without a role"
    assert any("role" in str(r.get("text")) for r in fake.responses)

    forged = bot.submit(
        STRANGER,
        {"callback_id": modals.ADD_SERVER, "private_metadata": json.dumps({"user": ADMIN})},
        add_values(fake, "Mosyle", certs.self_signed_rsa().pem),
    )
    assert forged.json()["response_action"] == "update"
    assert "role" in json.dumps(forged.json()["view"])
    sid = server_id(bot, "Jamf Pro")
    before = active_tokens(bot)
    for callback in (modals.CONFIRM_TOKEN, modals.CONFIRM_REMOVE):
        reply = bot.submit(
            STRANGER,
            {"callback_id": callback, "private_metadata": bot.metadata({"server_id": sid})},
            {},
        )
        assert "role" in json.dumps(reply.json()["view"])
    bot.press(STRANGER, "server_token", str(sid))
    bot.wait_idle(lambda: bool(fake.calls_to("views.open")))
    assert "role" in json.dumps(fake.calls_to("views.open")[0].params["view"])
    assert bot.shortcut(STRANGER, "add_mdm_server").status == 200
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) == 2)
    refused = fake.calls_to("views.open")[1].params["view"]
    assert "role" in json.dumps(refused) and "callback_id" not in refused
    assert bot.shortcut(ADMIN, "add_mdm_server").status == 200
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) == 3)
    assert fake.calls_to("views.open")[2].params["view"]["callback_id"] == modals.ADD_SERVER
    time.sleep(0.3)
    assert not fake.uploads
    assert active_tokens(bot) == before
    assert [v.name for v in _names(bot)] == ["Jamf Pro"]
    bot.wait_idle(lambda: _email(bot, STRANGER) == "sam@school.example")


def _email(bot: Bot, user: str) -> str | None:
    from core.models import Person

    with bot.ctx.unit_of_work(readonly=True) as session:
        person = session.get(Person, user)
        return person.email if person else None


def _names(bot: Bot) -> list[Any]:
    from core.tokens import servers

    with bot.ctx.unit_of_work() as session:
        return servers.list_servers(session)


def test_bad_names_and_certificates_come_back_inline(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    view = {"callback_id": modals.ADD_SERVER}
    cases = [
        ("Unassigned", certs.self_signed_rsa().pem, "name", "reserves"),
        (" re assigned", certs.self_signed_rsa().pem, None, None),
        ("ＪＡＭＦ   pro", certs.self_signed_rsa().pem, "name", "already exists"),
        ("Mosyle", certs.rsa_1024().pem, "certificate", "2048"),
        ("Mosyle", certs.ec_cert().pem, "certificate", "RSA"),
        ("Mosyle", certs.private_key_pem(), "certificate", "private key"),
        ("Mosyle", b"\x00\x01garbage" * 10, "certificate", "certificate"),
    ]
    for name, pem, field, words in cases:
        reply = bot.submit(ADMIN, view, add_values(fake, name, pem))
        body = reply.json()
        if field is None:
            assert body["response_action"] == "update"
            continue
        assert body["response_action"] == "errors", name
        assert words in body["errors"][field], body
    assert len(_names(bot)) == 2


def test_html_sign_in_page_is_refused(bot: Bot, fake: FakeSlack) -> None:
    page = fake.add_private_file(
        b"<!DOCTYPE html><html>Sign in</html>", name="mdm.pem", mimetype="text/html"
    )
    values = add_values(fake, "Mosyle", b"")
    values["certificate"] = {"type": "file_input", "files": [page]}
    reply = bot.submit(ADMIN, {"callback_id": modals.ADD_SERVER}, values)
    assert reply.json()["response_action"] == "errors"
    assert "web page" in reply.json()["errors"]["certificate"]
    foreign = dict(page, url_private_download="https://evil.example/cert.pem")
    values["certificate"] = {"type": "file_input", "files": [foreign]}
    reply = bot.submit(ADMIN, {"callback_id": modals.ADD_SERVER}, values)
    assert "isn't stored on Slack" in reply.json()["errors"]["certificate"]
    assert not _names(bot)


def test_rate_limited_delivery_is_retried(bot: Bot, fake: FakeSlack) -> None:
    fake.rate_limit_next("files.completeUploadExternal", retry_after=1)
    add_server(bot, fake)
    assert len(fake.calls_to("files.completeUploadExternal")) == 2
    assert len(active_tokens(bot)) == 1


def test_slack_failure_during_delivery_keeps_the_old_token(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    old = active_tokens(bot)
    fake.reset()
    fake.fail_next("files.completeUploadExternal", error="internal_error", status=500, times=5)
    sid = server_id(bot, "Jamf Pro")
    reply = bot.submit(
        ADMIN,
        {"callback_id": modals.CONFIRM_TOKEN, "private_metadata": bot.metadata({"server_id": sid})},
        {},
    )
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(
        lambda: any(
            "Reference" in json.dumps(c.params.get("view")) for c in fake.calls_to("views.update")
        )
    )
    assert active_tokens(bot) == old
    with bot.ctx.unit_of_work() as session:
        statuses = sorted(t.status for t in issuance.list_tokens(session))
    assert statuses == ["active", "revoked"]


def test_forged_or_stale_signatures_get_401(bot: Bot) -> None:
    assert bot.command(ADMIN, "list", secret="not-the-secret").status == 401
    assert bot.command(ADMIN, "list", timestamp=int(time.time()) - 301).status == 401
    assert bot.command(ADMIN, "list").status == 200


def test_server_names_are_escaped_in_mrkdwn(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake, "<!channel> & co")
    reply = bot.command(ADMIN, "list")
    assert "&lt;!channel&gt; &amp; co" in reply.body
    assert "<!channel>" not in reply.body
    comment = fake.uploads[-1]["initial_comment"]
    assert "<!channel>" not in comment and "&lt;!channel&gt;" in comment


def test_token_cert_and_remove_confirm_in_a_modal(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    fake.reset()
    for sub, words in (
        ("token", "stops working"),
        ("cert", "stops working"),
        ("remove", "revoked"),
    ):
        bot.command(ADMIN, f"{sub} jamf pro")
        bot.wait_idle(lambda sub=sub: len(fake.calls_to("views.open")) >= 1)
        view = fake.calls_to("views.open")[-1].params["view"]
        assert words in json.dumps(view), sub
        fake.reset()
    cert = certs.ca_signed_rsa()
    sid = server_id(bot, "Jamf Pro")
    reply = bot.submit(
        ADMIN,
        {"callback_id": modals.REPLACE_CERT, "private_metadata": bot.metadata({"server_id": sid})},
        {"certificate": cert_file_state(fake, cert.pem)},
    )
    assert reply.json()["response_action"] == "update"

    def tokens() -> list[issuance.TokenView]:
        with bot.ctx.unit_of_work() as session:
            return issuance.list_tokens(session)

    # The file is DM'd first and the token activated after: wait for the activation asserted.
    bot.wait_idle(lambda: [t.status for t in tokens()] == ["active", "superseded"])
    assert len(fake.uploads) == 1
    assert tokens()[1].reason == "certificate replaced"
    reply = bot.submit(
        ADMIN,
        {
            "callback_id": modals.CONFIRM_REMOVE,
            "private_metadata": bot.metadata({"server_id": sid}),
        },
        {},
    )
    assert "Removed" in json.dumps(reply.json())
    assert not _names(bot)


def test_app_home_shows_servers_with_actions(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    bot.event({"type": "app_home_opened", "user": ADMIN, "tab": "home"}, event_id="Ev1")
    bot.wait_idle(lambda: ADMIN in fake.published_home)
    home = json.dumps(fake.published_home[ADMIN], ensure_ascii=False)
    assert "Jamf Pro" in home and "server_token" in home and "🟢" in home
    bot.event({"type": "app_home_opened", "user": STRANGER, "tab": "home"}, event_id="Ev2")
    bot.wait_idle(lambda: STRANGER in fake.published_home)
    home = json.dumps(fake.published_home[STRANGER], ensure_ascii=False)
    assert "Jamf Pro" not in home and "server_token" not in home and "/mdm grant" in home


def test_a_crash_after_the_ack_answers_with_a_reference_not_a_trace(
    bot: Bot, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(*_: object) -> None:
        raise RuntimeError("database file /var/lib/mdmbot/secret.db is gone")

    monkeypatch.setattr(bot.svc, "authorize", crash)
    answered = len(fake.responses)
    reply = bot.command(ADMIN, "add")
    assert reply.status == 200 and reply.elapsed < 3
    bot.wait_idle(lambda: len(fake.responses) > answered)
    said = json.dumps(fake.responses[-1])
    assert "Something went wrong in mdmbot before it finished, so part of this may have" in said
    assert "nothing was changed" not in said, "mdmbot cannot know that after a crash"
    assert "Reference: `" in said
    assert "secret.db" not in said and "Traceback" not in said
    assert not fake.calls_to("views.open")
    assert "RuntimeError" in caplog.text, "the operator's log has the error under the reference"
