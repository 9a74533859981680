"""Connected servers in Slack: renewals installed into NanoDEP, failures DM the file and retry."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bot.serve import serve_dep
from bot.slack.builders import modals
from bot.slack.installs import RENEW_ALL
from bot.slack.sweeper import Sweeper
from core.connections import links
from core.roles import Actor
from core.tokens import issuance, servers
from tests import certs
from tests.dep_client import Creds, session_key
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_slack_add import add_values
from tests.e2e.test_slack_lifecycle import posts, press_on
from tests.fakemdm import NANODEP_KEY as KEY
from tests.fakemdm import FakeNanoDep
from tests.fakemdm import installer as mdm_installer
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot


def _link(
    bot: Bot,
    fake: FakeSlack,
    nanodep: FakeNanoDep,
    name: str = "school1",
    user: str = ADMIN,
    **options: int,
) -> None:
    """`/mdm add` with NanoDEP's certificate, then the connection (as `server connect` makes)."""
    spec = links.make_spec(
        "nanodep", url=nanodep.url, dep_name=name, api_key=KEY, **options
    )  # type: ignore[arg-type]
    pem = mdm_installer().fetch_certificate(spec, name)
    uploads, count = len(fake.uploads), len(active(bot))
    bot.submit(user, {"callback_id": modals.ADD_SERVER}, add_values(fake, name, pem))
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    bot.wait_idle(lambda: len(active(bot)) > count)
    with bot.ctx.unit_of_work() as session:
        server = servers.find_server(session, name)
        links.save_connection(session, bot.ctx.vault, Actor(ADMIN), server, spec, bot.clock())


def active(bot: Bot) -> list[issuance.TokenView]:
    with bot.ctx.unit_of_work() as session:
        return [t for t in issuance.list_tokens(session) if t.status == "active"]


def _use(bot: Bot, *installed: dict[str, str]) -> None:
    """NanoDEP's DEP client opens a session with each token it holds."""
    dep = serve_dep(bot.ctx, bot.svc, "127.0.0.1", 0)
    try:
        for fields in installed:
            creds = Creds(
                fields["consumer_key"], fields["consumer_secret"], fields["access_token"],
                fields["access_secret"], 0,
            )  # fmt: skip
            stamp = str(int(bot.clock().timestamp()))
            session_key(f"http://127.0.0.1:{dep.port}", creds, timestamp=stamp)
    finally:
        dep.close()


def show(bot: Bot, text: str = "show school1") -> str:
    """What `/mdm show school1` (or another `/mdm` command) answers."""
    reply = bot.command(ADMIN, text)
    assert reply.status == 200
    return json.dumps(reply.json(), ensure_ascii=False)


def _alert(fake: FakeSlack) -> str:
    """The expiry alert as it reads now (its blocks)."""
    return json.dumps(posts(fake)[-1]["blocks"], ensure_ascii=False)


def _renew_from_alert(bot: Bot, fake: FakeSlack) -> str:
    token = active(bot)[0]
    sweeper = Sweeper(bot.svc, post_interval=0)
    at = token.expires_at - timedelta(days=29)
    assert sweeper.sweep(at).alerts_sent == 1
    bot.clock.now = at
    view = press_on(bot, fake, ADMIN, posts(fake)[-1], "renew_token", str(token.id))
    confirm = json.dumps(view["blocks"], ensure_ascii=False)
    assert "mdmbot installs the new one into NanoDEP (school1) straight away" in confirm
    bot.wait_idle(lambda: active(bot)[0].id != token.id)
    bot.wait_idle(lambda: "Renewed" in json.dumps(posts(fake)[-1]["blocks"]))

    def shown() -> str:
        return json.dumps(fake.views[view["id"]], ensure_ascii=False)

    bot.wait_idle(lambda: "Installed" in shown() or "Couldn" in shown())
    return shown()


def _connection_values(
    url: str, name: str, key: str = KEY, **fields: dict[str, object]
) -> dict[str, object]:
    """The add modal's state: a name and a NanoDEP connection instead of a certificate."""
    option = {"text": {"type": "plain_text", "text": "NanoDEP"}, "value": "nanodep"}
    values: dict[str, object] = {
        "name": {"type": "plain_text_input", "value": name},
        "release": {"type": "checkboxes", "selected_options": []},
        "certificate": {"type": "file_input", "files": []},
        modals.MDM_KIND: {"type": "static_select", "selected_option": option},
        modals.MDM_URL: {"type": "plain_text_input", "value": url},
        modals.MDM_API_KEY: {"type": "plain_text_input", "value": key},
    }
    return {**values, **fields}


def _open_add(bot: Bot, fake: FakeSlack) -> dict[str, Any]:
    """`/mdm add`: the modal as Slack opened it."""
    opened = len(fake.calls_to("views.open"))
    bot.command(ADMIN, "add")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    return bot.opened_view()


def test_add_from_slack_with_a_connection_fetches_the_certificate_and_installs(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    view = _open_add(bot, fake)
    ids = [b.get("block_id") for b in view["blocks"]]
    assert {modals.MDM_KIND, modals.MDM_URL, modals.MDM_API_KEY, modals.AUTO_RENEW} <= set(ids)
    kinds = next(b for b in view["blocks"] if b.get("block_id") == modals.MDM_KIND)
    assert [o["value"] for o in kinds["element"]["options"]] == ["nanodep", "fleet"]

    auto = {modals.AUTO_RENEW: {"type": "number_input", "value": "30"}}
    reply = bot.submit(ADMIN, view, _connection_values(nanodep.url, "school1", **auto), view["id"])
    assert reply.status == 200 and reply.json()["response_action"] == "update"
    assert "Fetching the certificate from NanoDEP (school1)" in json.dumps(reply.json())
    bot.wait_idle(lambda: "Installed" in json.dumps(fake.views[view["id"]]))
    modal = json.dumps(fake.views[view["id"]], ensure_ascii=False)
    assert "Installed in NanoDEP (school1) — waiting for its first use." in modal
    assert not fake.uploads, "installed: no DM with a file"
    assert [c.method for c in nanodep.calls] == ["GET", "PUT"]
    with bot.ctx.unit_of_work() as session:
        shown = links.describe(session, servers.find_server(session, "school1").id)
    assert shown is not None and (shown["kind"], shown["auto_renew_days"]) == ("nanodep", 30)
    shown = show(bot)
    assert "⚪️ *school1*: installed in NanoDEP (school1) <!date^" in shown
    assert "waiting for the MDM server's first use" in shown and "upload" not in shown
    assert "*Connection*\\nNanoDEP (school1)" in shown and f"Connected by <@{ADMIN}>" in shown
    _use(bot, nanodep.tokens["school1"])
    assert "in use since <!date^" in show(bot)
    assert KEY not in repr(fake.calls) + json.dumps(fake.views)


def test_add_from_slack_with_a_bad_connection_changes_nothing(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    view = _open_add(bot, fake)
    url = {modals.MDM_URL: {"type": "plain_text_input", "value": "ftp://nanodep"}}
    reply = bot.submit(ADMIN, view, _connection_values(nanodep.url, "school1", **url))
    assert reply.json()["errors"] == {modals.MDM_URL: (
        "Give the MDM server's http(s) URL, such as https://nanodep.school.example."
    )}
    everything = {
        **url,
        modals.MDM_DEP_NAME: {"type": "plain_text_input", "value": "a/b"},
        modals.MDM_API_KEY: {"type": "plain_text_input", "value": ""},
    }
    reply = bot.submit(ADMIN, view, _connection_values(nanodep.url, "Unassigned", **everything))
    assert set(reply.json()["errors"]) == {
        modals.MDM_URL, modals.MDM_DEP_NAME, modals.MDM_API_KEY, "name"
    }, "every field's problem in one pass"
    with_cert = add_values(fake, "school1", certs.self_signed_rsa().pem)
    reply = bot.submit(ADMIN, view, {**_connection_values(nanodep.url, "school1"), **with_cert})
    assert set(reply.json()["errors"]) == {"certificate"}
    nothing = {"type": "static_select", "selected_option": None}
    unchosen = {**_connection_values(nanodep.url, "school1"), modals.MDM_KIND: nothing}
    reply = bot.submit(ADMIN, view, unchosen)
    assert set(reply.json()["errors"]) == {modals.MDM_KIND, "certificate"}
    assert bot.submit(STRANGER, view, _connection_values(nanodep.url, "school1")).json()[
        "response_action"] == "update"
    assert not nanodep.calls, "nothing was fetched for a refused submission or a stranger"

    wrong = _connection_values(nanodep.url, "school1", key="wrong")
    assert bot.submit(ADMIN, view, wrong, view["id"]).json()["response_action"] == "update"
    bot.wait_idle(lambda: "Couldn" in json.dumps(fake.views[view["id"]]))
    modal = json.dumps(fake.views[view["id"]], ensure_ascii=False)
    assert "Couldn't fetch the certificate from NanoDEP (school1): 401" in modal
    assert "Nothing was added" in modal
    kept = {b.get("block_id"): b.get("element", {}) for b in fake.views[view["id"]]["blocks"]}
    assert kept["name"]["initial_value"] == "school1", "the form keeps what was typed"
    assert kept[modals.MDM_URL]["initial_value"] == nanodep.url
    assert kept[modals.MDM_KIND]["initial_option"]["value"] == "nanodep"
    assert "initial_value" not in kept[modals.MDM_API_KEY], "never the key"
    assert "initial_options" not in kept["release"], "unchecked stays unchecked"
    assert fake.views[view["id"]]["callback_id"] == modals.ADD_SERVER, "submit again"
    with bot.ctx.unit_of_work() as session:
        assert servers.list_servers(session) == []


def test_a_renewal_from_the_alert_is_installed_without_a_file(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    _link(bot, fake, nanodep)
    first = nanodep.calls[-1]
    uploads = len(fake.uploads)
    modal = _renew_from_alert(bot, fake)
    assert "Installed in NanoDEP (school1) — waiting for its first use." in modal
    assert len(fake.uploads) == uploads, "no DM with a file when the install worked"
    fields = nanodep.tokens["school1"]
    assert first.method == "GET" and [c.query for c in nanodep.calls if c.method == "PUT"] == [{}]
    shown = show(bot)
    assert "*school1*: installed in NanoDEP (school1) <!date^" in shown
    assert f"Renewed by <@{ADMIN}>" in shown and "Downloaded by" not in shown
    listed = show(bot, "list")
    assert "⚪️ *school1* — installed, waiting for first use · expires <!date^" in listed
    alert = _alert(fake)
    assert "Renewed: school1 — installed, waiting for first use" in alert
    assert "*school1*: installed in NanoDEP (school1) <!date^" in alert
    assert "waiting for the MDM server's first use" in alert
    assert "upload" not in alert and "resend" not in alert, "no file to carry or resend"
    assert "white_check_mark" not in alert and "✅ when" in alert, "no ✅ before first use"
    _use(bot, fields)  # NanoDEP's DEP client then uses it: the token is in use
    assert active(bot)[0].installed_at is not None
    assert "in use since <!date^" in show(bot)
    bot.wait_idle(lambda: "Renewed and in use: school1" in _alert(fake))
    assert KEY not in repr(fake.calls) + json.dumps(fake.views)


def test_a_failed_install_dms_the_file_and_the_sweep_installs_it_once(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    _link(bot, fake, nanodep)
    uploads = len(fake.uploads)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    modal = _renew_from_alert(bot, fake)
    assert (
        "Couldn’t install the new token for *school1* in NanoDEP (school1): 500 from NanoDEP "
        "(school1): database is locked. The file is in your DMs. The old token already stopped "
        "working, so it cannot enrol or sync devices until then. mdmbot tries again <!date^"
    ).replace("’", "'") in modal
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    assert fake.uploads[-1]["channel_id"] == fake.dm_channel_for(ADMIN)
    assert "school1" not in nanodep.tokens
    with bot.ctx.unit_of_work() as session:
        shown = links.describe(session, servers.find_server(session, "school1").id)
    assert shown is not None and shown["last_install_error"] == (
        "install failed once: 500 from NanoDEP (school1): database is locked."
    )

    failing = (
        "*school1*: install failing — installing into NanoDEP (school1) failed once: 500 from "
        "NanoDEP (school1): database is locked."
    )
    assert failing in show(bot) and "mdmbot tries again <!date^" in show(bot)
    alert = _alert(fake)
    assert "Renewed: school1 — install failing" in alert and failing in alert
    assert "install_again" in alert and "resend" not in alert, "connected: Install again"
    sweeper = Sweeper(bot.svc, post_interval=0)
    assert sweeper.sweep(bot.clock() + timedelta(minutes=1)).installs_tried == 0, "backing off"
    assert sweeper.sweep(bot.clock() + timedelta(minutes=6)).installs_tried == 1
    assert "Renewed: school1 — installed, waiting for first use" in _alert(fake), "retried"
    assert sweeper.sweep(bot.clock() + timedelta(minutes=60)).installs_tried == 0, "done"
    assert nanodep.tokens["school1"]
    assert sum(1 for c in nanodep.calls if c.method == "PUT") == 2


def _auto_renewing(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep, days: int
) -> tuple[issuance.TokenView, Sweeper]:
    """A server renewed automatically `days` before expiry: its token and a sweeper."""
    _link(bot, fake, nanodep, auto_renew_days=days)
    return active(bot)[0], Sweeper(bot.svc, post_interval=0)


def test_automatic_renewal_renews_installs_and_posts_one_notice(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    token, sweeper = _auto_renewing(bot, fake, nanodep, 90)
    assert sweeper.sweep(token.expires_at - timedelta(days=91)).renewed == 0
    report = sweeper.sweep(token.expires_at - timedelta(days=89))
    assert report.renewed == 1 and report.alerts_sent == 0
    assert sweeper.sweep(token.expires_at - timedelta(days=88)).renewed == 0, "once per token"
    [notice] = posts(fake)
    assert notice["text"] == (
        ":recycle: Renewed the token for *school1* automatically and installed it in NanoDEP "
        "(school1) — waiting for its first use."
    )
    renewed = active(bot)[0]
    assert renewed.id != token.id and renewed.downloaded_by == "mdmbot"
    assert nanodep.tokens["school1"]
    later = sweeper.sweep(token.expires_at - timedelta(days=1))
    assert (later.alerts_sent, later.renewed) == (0, 0), "the old token never alerts"


def test_no_expiry_alert_before_an_automatic_renewal_but_one_if_it_did_not_happen(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    token, sweeper = _auto_renewing(bot, fake, nanodep, 5)
    for days in (59, 29, 13, 6):  # the 60-, 30-, 14- and 7-day alerts come before day 5
        report = sweeper.sweep(token.expires_at - timedelta(days=days))
        assert (report.alerts_sent, report.renewed) == (0, 0), days
    assert not posts(fake)
    with bot.ctx.unit_of_work() as session:
        server = servers.find_server(session, "school1")
        links.disconnect(session, Actor(ADMIN), server, bot.clock())
    report = sweeper.sweep(token.expires_at - timedelta(days=2))
    assert (report.alerts_sent, report.renewed) == (1, 0), "not renewed: the 3-day alert goes out"
    assert "school1" in posts(fake)[-1]["text"]


def test_renew_all_and_install_on_a_checklist(
    bot: Bot, fake: FakeSlack, nanodep: FakeNanoDep
) -> None:
    leaver = "ULEAVER01"
    fake.add_user(leaver, "lee", "lee@school.example")
    bot.grant(leaver)
    for name in ("school1", "school2"):
        _link(bot, fake, nanodep, name, leaver)
    bot.command(ADMIN, f"offboard <@{leaver}|lee>")
    bot.wait_idle(lambda: len(posts(fake)) == 1)
    checklist = posts(fake)[0]
    buttons = [
        e for b in checklist["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    [renew_all] = [b for b in buttons if b["action_id"] == RENEW_ALL]
    assert renew_all["text"]["text"] == "Renew and install school1, school2", "names its servers"
    assert json.dumps(checklist["blocks"]).count("primary") == 1, "one green button"
    container = {"type": "message", "message_ts": checklist["ts"], "channel_id": "C0ALERTS"}
    assert bot.press(STRANGER, RENEW_ALL, renew_all["value"], container=container).status == 200
    bot.wait_idle(lambda: bool(fake.messages_in(fake.dm_channel_for(STRANGER))))
    assert not nanodep.tokens, "a stranger renews nothing"
    uploads = len(fake.uploads)
    bot.press(ADMIN, RENEW_ALL, renew_all["value"], container=container, message=checklist)
    bot.wait_idle(lambda: set(nanodep.tokens) == {"school1", "school2"})
    bot.wait_idle(lambda: json.dumps(posts(fake)[0]["blocks"]).count("waiting") == 2)
    assert len(fake.uploads) == uploads, "installed: no files"
    assert RENEW_ALL not in json.dumps(posts(fake)[0]["blocks"])
    _use(bot, *nanodep.tokens.values())
    bot.wait_idle(lambda: "Done" in json.dumps(posts(fake)[0]["blocks"]))
