"""Scenarios: devices from Slack — import a CSV, assign pasted serials, defaults, release."""

from __future__ import annotations

import json
from typing import Any

from bot.slack.builders import device_blocks as ui
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.roles import Actor, Role
from core.tokens import servers
from tests import certs
from tests.devices_support import HEADER, csv_of, serial
from tests.e2e.conftest import ADMIN, STRANGER
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

SITE = "USITE0001"


def link(bot: Bot, name: str) -> int:
    with bot.ctx.unit_of_work() as session:
        return servers.add_server(
            session,
            bot.ctx.vault,
            Actor("setup", operator=True),
            name=name,
            certificate=certs.self_signed_rsa().pem,
            release_devices=True,
            now=bot.clock(),
        ).server_id


def open_modal(bot: Bot, fake: FakeSlack, user: str, text: str) -> dict[str, Any]:
    opened = len(fake.calls_to("views.open"))
    reply = bot.command(user, text)
    assert reply.status == 200 and reply.elapsed < 3
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    return dict([v for v in fake.views.values() if v.get("type") == "modal"][-1])


def respond_text(bot: Bot, fake: FakeSlack, user: str, text: str) -> str:
    answered = len(fake.responses)
    bot.command(user, text)
    bot.wait_idle(lambda: len(fake.responses) > answered)
    return json.dumps(fake.responses[-1], ensure_ascii=False)


def dm_texts(fake: FakeSlack) -> list[str]:
    return [str(m.get("text")) for m in fake.messages if str(m.get("channel", "")).startswith("D")]


def test_import_assign_list_and_home(bot: Bot, fake: FakeSlack) -> None:
    link(bot, "Jamf Pro")
    link(bot, "Mosyle")
    view = open_modal(bot, fake, ADMIN, "devices import")
    assert view["callback_id"] == ui.IMPORT_DEVICES
    file_block = next(b for b in view["blocks"] if b.get("block_id") == "file")
    assert file_block["element"]["type"] == "file_input"

    bad = f"{HEADER}\n{serial(1)},iPad,d,Blue,iPad,iPadOS,,\nnope,iPad,d,Blue,iPad,iPadOS,,\n"
    file = fake.add_private_file(bad.encode(), name="bad.csv")
    reply = bot.submit(ADMIN, view, {"file": {"type": "file_input", "files": [file]}}, view["id"])
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(lambda: "line 3" in json.dumps(fake.views[view["id"]]))
    assert "Nothing was imported" in json.dumps(fake.views[view["id"]])

    view = open_modal(bot, fake, ADMIN, "devices import")
    good = csv_of([serial(i) for i in range(1, 26)])
    file = fake.add_private_file(good, name="devices.csv")
    bot.submit(ADMIN, view, {"file": {"type": "file_input", "files": [file]}}, view["id"])
    bot.wait_idle(lambda: "Imported 25 devices: 25 new" in json.dumps(fake.views[view["id"]]))
    bot.wait_idle(lambda: any("Imported 25 devices" in t for t in dm_texts(fake)))
    missing = bot.submit(ADMIN, view, {"file": {"type": "file_input", "files": []}}, view["id"])
    assert missing.json() == {
        "response_action": "errors",
        "errors": {"file": "Attach one CSV file."},
    }

    view = open_modal(bot, fake, ADMIN, "assign jamf pro")
    assert view["callback_id"] == ui.ASSIGN_DEVICES
    pasted = "\n".join([serial(i).lower() for i in range(1, 23)] + ["C02UNKNOWN1", "bad!"])
    reply = bot.submit(
        ADMIN, view, {"serials": {"type": "plain_text_input", "value": pasted}}, view["id"]
    )
    errors = reply.json()["errors"]["serials"]
    assert reply.json()["response_action"] == "errors"
    assert errors.startswith("Assigned 22 to Jamf Pro. Not assigned — not serial numbers: bad!")
    assert "unknown: C02UNKNOWN1" in errors
    with bot.ctx.unit_of_work(readonly=True) as session:
        assert len(devices.list_devices(session, server_name="Jamf Pro")) == 22
    again = bot.submit(
        ADMIN, view, {"serials": {"type": "plain_text_input", "value": serial(1)}}, view["id"]
    )
    assert "1 already there" in json.dumps(again.json()["view"])

    listing = respond_text(bot, fake, ADMIN, "devices Jamf Pro")
    assert "22 devices (22 iPad)" in listing
    assert serial(1) in listing and serial(20) in listing and serial(21) not in listing
    assert "First 20 of 22" in listing and "mdmbot devices" not in listing
    uploads = len(fake.uploads)
    bot.press(STRANGER, ui.DEVICES_CSV, "Jamf Pro")
    bot.wait_idle(lambda: bool(fake.messages_in(fake.dm_channel_for(STRANGER))))
    assert len(fake.uploads) == uploads, "no list for someone without a role"
    bot.press(ADMIN, ui.DEVICES_CSV, "Jamf Pro")
    bot.wait_idle(lambda: len(fake.uploads) > uploads)
    sent = fake.uploads[-1]
    assert sent["filename"] == "Jamf_Pro_devices.csv"
    assert sent["channel_id"] == fake.dm_channel_for(ADMIN)
    rows = sent["bytes"].decode().splitlines()
    assert rows[0].startswith("serial_number,model,") and len(rows) == 23
    assert rows[21].startswith(serial(21)), "every device, by serial"
    overview = respond_text(bot, fake, ADMIN, "devices")
    assert "*Unassigned* — 3 devices (3 iPad)" in overview and "*Mosyle* — 0 devices" in overview

    bot.svc.refresh_home(ADMIN)
    home = json.dumps(fake.published_home[ADMIN])
    assert "Jamf Pro" in home and "22 devices" in home and "0 devices" in home


def test_defaults_and_release(bot: Bot, fake: FakeSlack) -> None:
    jamf = link(bot, "Jamf Pro")
    bot.grant(SITE, Role.SITE_MANAGER)
    view = open_modal(bot, fake, SITE, "defaults")
    assert view["callback_id"] == ui.DEVICE_DEFAULTS
    choice = {"type": "static_select", "selected_option": {"value": str(jamf)}}
    none = {"type": "static_select", "selected_option": {"value": ui.NO_DEFAULT}}
    values = {f"family:{f}": choice if f == "iPad" else none for f in devices.FAMILIES}
    reply = bot.submit(SITE, view, values, view["id"])
    assert "iPad: Jamf Pro" in json.dumps(reply.json()["view"])
    with bot.ctx.unit_of_work() as session:
        device_import.import_devices(
            session, Actor("setup", operator=True), csv_of([serial(1), serial(2)]), bot.clock()
        )
        assert devices.show_device(session, serial(1)).server == "Jamf Pro"

    refused = respond_text(bot, fake, SITE, f"release {serial(1)}")
    assert "Only an Administrator can release devices" in refused
    view = open_modal(bot, fake, ADMIN, f"release {serial(1)} {serial(2).lower()}")
    assert view["callback_id"] == ui.RELEASE_DEVICES
    assert serial(2) in json.dumps(view) and "cannot be undone" in json.dumps(view)
    forged = bot.submit(SITE, view, {}, view["id"])
    assert "Only an Administrator" in json.dumps(forged.json()["view"])
    reply = bot.submit(ADMIN, view, {}, view["id"])
    assert f"Released 2 device(s): {serial(1)}, {serial(2)}." in json.dumps(reply.json()["view"])
    with bot.ctx.unit_of_work(readonly=True) as session:
        assert devices.list_devices(session) == []
    already = respond_text(bot, fake, ADMIN, f"release {serial(1)}")
    assert "Nothing was released. Not releasable — released: C02000000001." in already


def test_stranger_gets_nothing_from_device_commands(bot: Bot, fake: FakeSlack) -> None:
    link(bot, "Jamf Pro")
    for text in (
        "devices",
        "devices Jamf Pro",
        "devices import",
        "assign Jamf Pro",
        "defaults",
        f"release {serial(1)}",
    ):
        answer = respond_text(bot, fake, STRANGER, text)
        assert "role" in answer or "Only an Administrator" in answer, text
    assert not fake.calls_to("views.open")
    for callback in (ui.ASSIGN_DEVICES, ui.IMPORT_DEVICES, ui.DEVICE_DEFAULTS, ui.RELEASE_DEVICES):
        reply = bot.submit(STRANGER, {"callback_id": callback, "private_metadata": "{}"}, {})
        shown = json.dumps(reply.json()["view"])
        assert "role" in shown or "Only an Administrator" in shown, callback


def test_unknown_server_and_empty_paste(bot: Bot, fake: FakeSlack) -> None:
    link(bot, "Jamf Pro")
    assert "There is no MDM server called “Nope”" in respond_text(bot, fake, ADMIN, "devices Nope")
    assert "/mdm assign SERVER" in respond_text(bot, fake, ADMIN, "assign")
    view = open_modal(bot, fake, ADMIN, "assign Jamf Pro")
    reply = bot.submit(ADMIN, view, {"serials": {"type": "plain_text_input", "value": " \n"}})
    assert reply.json() == {
        "response_action": "errors",
        "errors": {"serials": "Give at least one serial number."},
    }
