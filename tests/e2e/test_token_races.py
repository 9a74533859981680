"""Scenarios: two people confirm a new token at once; a delivery cut short by a crash."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import runtime as runtime_module
from bot.runtime import Runtime
from bot.slack.sweeper import Sweeper
from core.models import Token
from core.roles import Actor
from core.tokens import issuance, servers
from tests.conftest import postgres_schema
from tests.e2e.conftest import ADMIN
from tests.e2e.test_slack_guards import active_tokens, add_server
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, Reply

OTHER = "UADMIN02"
REPLACED = "Someone else just replaced the token"


def confirm_modal(bot: Bot, fake: FakeSlack, user: str) -> dict[str, Any]:
    """`/mdm token Jamf Pro`: the confirmation modal as Slack stored it."""
    opened = len(fake.calls_to("views.open"))
    bot.command(user, "token Jamf Pro")
    bot.wait_idle(lambda: len(fake.calls_to("views.open")) > opened)
    return bot.opened_view()


def told(fake: FakeSlack, reply: Reply, user: str, view_id: str, text: str) -> bool:
    """Whether `user` saw `text`: in the submission's answer, its modal or a DM."""
    updates = [c.params.get("view") for c in fake.calls_to("views.update")]
    return (
        text in reply.body
        or any(
            c.params.get("view_id") == view_id and text in json.dumps(v)
            for c, v in zip(fake.calls_to("views.update"), updates, strict=True)
        )
        or any(text in json.dumps(m) for m in fake.messages_in(fake.dm_channel_for(user)))
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_bot(request: pytest.FixtureRequest, fake: FakeSlack, tmp_path: Path) -> Iterator[Bot]:
    """The bot on SQLite or on a private PostgreSQL schema, with ADMIN as Administrator."""
    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'bot.db'}"
        if request.param == "postgresql":
            url = stack.enter_context(postgres_schema())
        running = Bot(fake, url, str(tmp_path))
        running.grant(ADMIN)
        yield running
        running.stop()


@pytest.mark.parametrize("round_", range(3))
def test_two_people_confirming_at_once_get_one_token(
    any_bot: Bot, fake: FakeSlack, round_: int
) -> None:
    bot = any_bot
    fake.add_user(OTHER, "robin", "robin@school.example")
    bot.grant(OTHER)
    add_server(bot, fake)
    [before] = active_tokens(bot)
    views = {user: confirm_modal(bot, fake, user) for user in (ADMIN, OTHER)}
    uploads = len(fake.uploads)
    replies: dict[str, Reply] = {}
    start = threading.Barrier(2)

    def submit(user: str) -> None:
        start.wait(timeout=10)
        replies[user] = bot.submit(user, views[user], {}, view_id=views[user]["id"])

    threads = [threading.Thread(target=submit, args=(user,)) for user in views]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    bot.wait_idle(lambda: any(told(fake, replies[u], u, views[u]["id"], REPLACED) for u in views))
    bot.wait_idle(lambda: len(active_tokens(bot)) == 1 and active_tokens(bot) != [before])
    new = fake.uploads[uploads:]
    assert len(new) == 1, "only one of the two got a token file"
    winner = next(u for u in views if new[0]["channel_id"] == fake.dm_channel_for(u))
    loser = next(u for u in views if u != winner)
    assert told(fake, replies[loser], loser, views[loser]["id"], REPLACED)
    assert not any(u["channel_id"] == fake.dm_channel_for(loser) for u in new)


def stuck_delivery(bot: Bot, fake: FakeSlack, *, uploaded: bool) -> int:
    """A new token marked as being DM'd to ADMIN, then the process 'stops' before activation."""
    now = bot.clock() - timedelta(minutes=10)
    with bot.ctx.unit_of_work() as session:
        server = servers.find_server(session, "Jamf Pro")
        issued = issuance.issue_token(session, bot.ctx.vault, Actor(ADMIN), server, now)
    channel = bot.svc.gateway.open_dm(ADMIN)
    with bot.ctx.unit_of_work() as session:
        refusal = issuance.start_delivery(
            session, Actor(ADMIN), issued.token_id, f"slack:{channel}", now
        )
    assert refusal is None
    if uploaded:
        bot.svc.gateway.send_file(channel, issued.filename, issued.content, "Your new token")
    with bot.ctx.unit_of_work() as session:
        assert sorted(t.status for t in issuance.list_tokens(session)) == ["active", "delivering"]
    return issued.token_id


def status(bot: Bot, token_id: int) -> tuple[str, str | None]:
    with bot.ctx.unit_of_work(readonly=True) as session:
        token = session.get(Token, token_id)
        assert token is not None
        return token.status, token.reason


def test_a_token_whose_file_reached_the_dm_is_activated_by_the_next_sweep(
    bot: Bot, fake: FakeSlack
) -> None:
    add_server(bot, fake)
    [old] = active_tokens(bot)
    token_id = stuck_delivery(bot, fake, uploaded=True)
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    assert status(bot, token_id) == ("active", None)
    assert active_tokens(bot) == [token_id] and old != token_id
    dms = json.dumps(fake.messages_in(fake.dm_channel_for(ADMIN)))
    assert "is now the active one" in dms


def test_a_token_that_never_reached_the_dm_is_discarded_at_start_up(
    bot: Bot, fake: FakeSlack
) -> None:
    add_server(bot, fake)
    [old] = active_tokens(bot)
    token_id = stuck_delivery(bot, fake, uploaded=False)
    runtime = Runtime(bot.ctx, bot.svc, scheduler=False)
    runtime.start()
    bot.wait_idle(lambda: status(bot, token_id)[0] == "revoked")
    assert status(bot, token_id) == ("revoked", "delivery interrupted")
    assert active_tokens(bot) == [old], "the previous token stays valid"
    bot.wait_idle(
        lambda: "didn't reach you" in json.dumps(fake.messages_in(fake.dm_channel_for(ADMIN)))
    )
    runtime.stop()


def test_a_delivery_in_progress_is_left_alone(bot: Bot, fake: FakeSlack) -> None:
    add_server(bot, fake)
    token_id = stuck_delivery(bot, fake, uploaded=False)
    bot.clock.now -= timedelta(minutes=9)  # the sweep runs a minute after the delivery began
    Sweeper(bot.svc, post_interval=0).sweep(bot.clock())
    assert status(bot, token_id) == ("delivering", None)


def test_a_delivery_cut_short_just_before_start_up_is_settled_after_its_grace(
    bot: Bot, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_server(bot, fake)
    [old] = active_tokens(bot)
    token_id = stuck_delivery(bot, fake, uploaded=False)
    bot.clock.now -= timedelta(minutes=9)  # the process stopped a minute into the delivery
    monkeypatch.setattr(runtime_module, "DELIVERY_GRACE", timedelta(seconds=-4))  # timer: 1 s
    runtime = Runtime(bot.ctx, bot.svc, scheduler=False)
    runtime.start()
    time.sleep(0.5)
    assert status(bot, token_id) == ("delivering", None), "too recent to judge at start-up"
    bot.clock.now += timedelta(minutes=5)
    bot.wait_idle(lambda: status(bot, token_id)[0] == "revoked")
    assert active_tokens(bot) == [old]
    runtime.stop()
