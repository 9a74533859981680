"""Block Kit builders stay inside Slack's documented limits whatever the data."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from bot.slack.builders import blocks, home_blocks, modals, server_blocks
from bot.slack.builders import lifecycle_blocks as lb
from core.people.alerts import DueAlert
from core.people.rotation import CaseView, ItemView
from core.roles import Role
from core.tokens.servers import ServerView

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def server(i: int, name: str | None = None) -> ServerView:
    return ServerView(
        id=i,
        name=name or f"Server {i:03d} " + "x" * 50,
        release_devices=i % 2 == 0,
        created_by="U1",
        created_at=NOW,
        certificate_subject="CN=x",
        certificate_not_after=NOW,
        token_id=i,
        token_issued_at=NOW,
        token_expires_at=NOW + timedelta(days=i),
        downloaded_by="U1",
    )


def texts(value: object) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("type") in ("mrkdwn", "plain_text"):
            found.append(str(value["text"]))
        for item in value.values():
            found += texts(item)
    elif isinstance(value, list):
        for item in value:
            found += texts(item)
    return found


def test_home_tab_stays_under_100_blocks_with_250_servers() -> None:
    view = home_blocks.home_view([server(i) for i in range(250)], NOW, Role.ADMINISTRATOR)
    assert len(view["blocks"]) <= 100
    assert "more" in str(view["blocks"][-2])


def test_list_message_stays_under_50_blocks_and_3000_characters() -> None:
    reply = server_blocks.server_list_blocks([server(i) for i in range(250)], NOW)
    assert len(reply) <= 50
    assert all(len(t) <= 3000 for t in texts(reply))
    assert sum(t.count("Server ") for t in texts(reply)) == 250


def test_the_same_listing_is_rendered_once_a_second_and_changes_show_at_once() -> None:
    views = [server(1, "Jamf"), server(2, "Mosyle")]
    first = server_blocks.server_list_blocks(views, NOW)
    first.append({"type": "divider"})  # a caller's change to its reply stays its own
    again = server_blocks.server_list_blocks(list(views), NOW + timedelta(milliseconds=900))
    assert again == first[:-1]
    renamed = [views[0], server(2, "Kandji")]
    assert "Kandji" in " ".join(texts(server_blocks.server_list_blocks(renamed, NOW)))
    # Jamf's token expires a second after NOW: the next second's listing says so.
    expiring = [server(1, "Jamf"), views[1]]
    expiring[0] = dataclasses.replace(expiring[0], token_expires_at=NOW + timedelta(seconds=1))
    before = server_blocks.server_list_blocks(expiring, NOW)
    after = server_blocks.server_list_blocks(expiring, NOW + timedelta(seconds=1))
    assert before != after and "expired" in " ".join(texts(after)).lower()


def test_user_text_is_escaped_and_titles_fit() -> None:
    hostile = server(1, "<!channel> & <@U999>")
    rendered = " ".join(texts(server_blocks.server_list_blocks([hostile], NOW)))
    assert "<!channel>" not in rendered and "&lt;!channel&gt; &amp; &lt;@U999&gt;" in rendered
    for view in (
        modals.add_server_modal(),
        modals.confirm_token_modal(hostile, now=NOW),
        modals.replace_cert_modal(hostile),
        modals.confirm_remove_modal(hostile),
        modals.edit_server_modal(hostile),
    ):
        assert len(view["title"]["text"]) <= 24
        assert len(view.get("submit", {"text": ""})["text"]) <= 24
        assert len(view.get("private_metadata", "")) <= 3000


def test_checklist_with_many_tokens_fits_one_message() -> None:
    items = tuple(ItemView(i, i, f"Server {i}", NOW, None, None, False) for i in range(80))
    case = CaseView(
        1, "U1", "Lee", "lee@example.edu", "departure", "open", NOW, "system", None, None, items
    )
    rendered = lb.checklist_blocks(case, NOW)
    assert len(rendered) <= 50
    assert "more" in str(rendered[-2])


def test_alert_counts_the_days_actually_left() -> None:
    alert = DueAlert(1, 1, "Jamf", 60, NOW + timedelta(days=41, hours=3), "U1", None, NOW)
    assert lb.alert_headline(alert, NOW) == "The server token for Jamf expires in 42 days"
    expired = DueAlert(1, 1, "Jamf", 0, NOW - timedelta(hours=1), "U1", None, NOW)
    assert lb.alert_headline(expired, NOW) == "The server token for Jamf has expired"


def test_long_text_is_cut_on_whole_tokens_within_slack_limits() -> None:
    moment = blocks.local_time(NOW)
    text = " ".join(f"{blocks.mention('U0ALEX')} renewed {moment}" for _ in range(200))
    for block, limit in ((blocks.context(text), 2000), (blocks.section(text), 3000)):
        cut = block["elements"][0]["text"] if block["type"] == "context" else block["text"]["text"]
        assert len(cut) <= limit and cut.endswith("…")
        body = cut.removesuffix("…")
        assert body.count("<") == body.count(">"), "no <@…> or <!date^…> split in two"
        assert body.rstrip().endswith((">", "renewed")), body[-40:]
    assert blocks.context("short")["elements"][0]["text"] == "short"
