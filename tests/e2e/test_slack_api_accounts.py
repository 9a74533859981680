"""School Manager API accounts on the App Home: listed for Administrators only, revoked with a
confirmed button press by an Administrator only."""

from __future__ import annotations

import json

from bot.serve import serve_dep
from core.asm import accounts
from core.roles import Role
from tests.asm_support import ApplePort
from tests.devices_support import OPERATOR
from tests.e2e.conftest import ADMIN, STRANGER
from tests.e2e.test_asm_server_writes import _der_b64
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot

MANAGER = "USITEMGR1"


def _home(bot: Bot, fake: FakeSlack, user: str, event_id: str) -> str:
    fake.published_home.pop(user, None)
    bot.event({"type": "app_home_opened", "user": user, "tab": "home"}, event_id=event_id)
    bot.wait_idle(lambda: user in fake.published_home)
    return json.dumps(fake.published_home[user], ensure_ascii=False)


def test_administrators_see_and_revoke_api_accounts(bot: Bot, fake: FakeSlack) -> None:
    fake.add_user(MANAGER, "kim", "kim@school.example")
    bot.grant(MANAGER, Role.SITE_MANAGER)
    with bot.ctx.unit_of_work() as session:
        made = accounts.create_account(session, OPERATOR, "Inventory <script>", "school",
                                       bot.clock())  # fmt: skip
    client_id = made.account.client_id
    home = _home(bot, fake, ADMIN, "Ev1")
    assert "School Manager API accounts" in home and client_id in home
    assert "Inventory &lt;script&gt;" in home and "api_account_revoke" in home
    assert client_id not in _home(bot, fake, MANAGER, "Ev2")
    assert client_id not in _home(bot, fake, STRANGER, "Ev3")

    assert bot.press(MANAGER, "api_account_revoke", client_id).status == 200
    bot.wait_idle(lambda: "Only an Administrator" in json.dumps(list(fake.views.values())))
    with bot.ctx.unit_of_work(readonly=True) as session:
        assert accounts.list_accounts(session, OPERATOR)[0].revoked_at is None

    fake.published_home.pop(ADMIN, None)
    assert bot.press(ADMIN, "api_account_revoke", client_id).status == 200
    bot.wait_idle(lambda: ADMIN in fake.published_home)
    with bot.ctx.unit_of_work(readonly=True) as session:
        assert accounts.list_accounts(session, OPERATOR)[0].revoked_at is not None
    home = json.dumps(fake.published_home[ADMIN], ensure_ascii=False)
    assert client_id not in home and "1 revoked account not shown" in home


def test_a_server_created_through_the_api_is_announced_with_get_token(
    bot: Bot, fake: FakeSlack
) -> None:
    dep = serve_dep(bot.ctx, bot.svc, "127.0.0.1", 0)
    try:
        port = ApplePort(bot.ctx, bot.clock, f"http://127.0.0.1:{dep.port}", dep)
        token = port.token(port.account("Terraform", "business"))
        body = {"data": {"type": "mdmServers", "attributes": {
            "serverName": "Marketing MDM",
            "serverCertificate": {"name": "mdm.cer", "data": _der_b64()},
        }}}  # fmt: skip
        status, _, created = port.call("POST", "/v1/mdmServers", token=token, body=body)
        assert status == 201, created
        bot.wait_idle(lambda: any("Marketing MDM" in str(m) for m in fake.messages_in("C0ALERTS")))
        (message,) = [m for m in fake.messages_in("C0ALERTS") if "Marketing MDM" in str(m)]
        assert "no token yet" in str(message["blocks"])
        button = message["blocks"][1]["elements"][0]
        assert (button["action_id"], button["text"]["text"]) == ("server_token", "Get token")
        assert int(button["value"]) == int(created["data"]["id"], 16)
    finally:
        dep.close()
