"""User-controlled text never becomes a mention in a message's `text` (what notifications show)."""

from __future__ import annotations

import json
from datetime import timedelta

from bot.slack.sweeper import Sweeper
from tests.dep_client import mdm_server_installs, present_replaced
from tests.e2e.conftest import ADMIN
from tests.e2e.test_dep_feedback import renew_in_slack
from tests.e2e.test_slack_guards import add_server
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

NAME = "D <!here> <!channel> <@UADMIN01>"
ESCAPED = "D &lt;!here&gt; &lt;!channel&gt; &lt;@UADMIN01&gt;"


def test_a_hostile_server_name_pings_nobody(bot: Bot, fake: FakeSlack) -> None:
    creds = mdm_server_installs(bot.ctx, bot.svc, add_server(bot, fake, NAME))
    renew_in_slack(bot, fake, NAME)

    present_replaced(bot.ctx, bot.svc, creds)
    bot.wait_idle(lambda: len(fake.messages_in("C0ALERTS")) >= 1)
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock() + timedelta(hours=25))
    posted = fake.messages_in("C0ALERTS")
    assert [m["text"] for m in posted] == [
        f"Superseded: the newer message about *{ESCAPED}* below says what is left.",
        f"{ESCAPED}: still presents the replaced token",
    ]
    assert NAME in json.dumps(posted[1]["blocks"]), "the header is plain text, shown as typed"

    shown = bot.command(ADMIN, f"show {NAME}").json()
    assert shown["text"] == ESCAPED
    missing = bot.command(ADMIN, "show <!here>").json()
    assert "<!here>" not in json.dumps(missing) and "&lt;!here&gt;" in missing["text"]
    nobody = bot.command(ADMIN, "revoke <@U0NOBODY1>").json()
    assert "<@U0NOBODY1>" in nobody["text"], "a mention mdmbot wrote stays a mention"
