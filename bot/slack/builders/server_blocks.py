"""Servers on the App Home, `/mdm list` and `/mdm show`, all through the phrase table."""

from __future__ import annotations

from datetime import datetime

from bot.slack.builders import phrases
from bot.slack.builders.blocks import (
    MAX_MESSAGE_BLOCKS,
    MAX_SECTION_TEXT,
    Block,
    context,
    esc,
    local_date,
    mention,
    plain,
    plural,
    section,
)
from core.connections.server_state import ServerState, by_urgency
from core.settings import SCHOOL_PORTAL
from core.tokens.servers import ServerView

MORE = "server_more"
MORE_OPTIONS = (
    ("Edit", "server_edit"),
    ("Replace certificate", "server_cert"),
    ("Remove", "server_remove"),
)


def overflow(view: ServerView, st: ServerState) -> Block:
    """The ⋯ menu: Renew or Upload (unless it is the state's one action), edit, cert, remove."""
    options = list(MORE_OPTIONS)
    todo = phrases.action(st)
    if view.token_id is not None and (
        todo is None or todo.action_id not in (phrases.RENEW, phrases.FROM_APPLE)
    ):
        options.insert(0, ("Upload token" if st.apple else "Renew token", "server_token"))
    return {
        "type": "overflow",
        "action_id": MORE,
        "options": [
            {"text": plain(label), "value": f"{action}:{view.id}"} for label, action in options
        ],
    }


def detail(view: ServerView, devices: int | None = None) -> str:
    """The facts after a state: devices, releases, who produced the token."""
    parts = []
    if devices is not None:
        parts.append(plural(devices, "device"))
    if not view.release_devices:
        parts.append("releases off")
    return " · ".join(parts)


def waiting_row(
    view: ServerView, st: ServerState, viewer: str | None, primary: bool, devices: int = 0
) -> list[Block]:
    """A server that waits on someone: problem and who acts, then its one button and ⋯."""
    text = phrases.sentence(view.name, st)
    facts = detail(view, devices)
    style = "primary" if primary else None
    button = phrases.action_button(st, view.id, view.token_id, viewer, style)
    elements = [button] if button is not None else []
    return [
        section(f"{text}\n{facts}" if facts else text),
        {
            "type": "actions",
            "block_id": f"server:{view.id}",
            "elements": [*elements, overflow(view, st)],
        },
    ]


def healthy_row(view: ServerView, st: ServerState, devices: int = 0) -> Block:
    """A server nobody needs to act on: one line with its ⋯ menu."""
    facts = detail(view, devices)
    text = phrases.line(view.name, st) + (f" · {facts}" if facts else "")
    return {
        "type": "section",
        "block_id": f"server:{view.id}",
        "text": {"type": "mrkdwn", "text": text},
        "accessory": overflow(view, st),
    }


def server_list_blocks(
    views: list[ServerView], now: datetime, portal: str | None = None
) -> list[Block]:
    """The `/mdm list` reply in the Home's order, packing lines into as few sections as fit
    (`portal`: Apple's, in Apple mode); rendered once a second at most for the same listing."""
    key = (int(now.timestamp()), portal, *map(id, views))
    kept = _RENDERED.get(key)
    if kept is not None:
        return list(kept[1])
    rendered = _list_blocks(views, now, portal)
    if len(_RENDERED) >= _RENDERED_MAX:
        _RENDERED.clear()
    _RENDERED[key] = (tuple(views), rendered)  # holds the views: their ids are not reused
    return list(rendered)


_RENDERED: dict[tuple[object, ...], tuple[tuple[ServerView, ...], list[Block]]] = {}
_RENDERED_MAX = 16  # a listing kept per pooled connection (core.connections.state), and spare


def _list_blocks(views: list[ServerView], now: datetime, portal: str | None) -> list[Block]:
    if not views:
        return [section("No MDM servers are linked yet. Add one with `/mdm add`.")]
    blocks: list[Block] = [section(f"*MDM servers ({len(views)})*")]
    chunk = ""
    for view, st in by_urgency(views, now, portal or SCHOOL_PORTAL):
        line = phrases.line(view.name, st)
        if not view.release_devices:
            line += " · releases off"
        if len(chunk) + len(line) + 1 > MAX_SECTION_TEXT:
            blocks.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    blocks.append(section(chunk))
    return [*blocks[: MAX_MESSAGE_BLOCKS - 1], context(phrases.KEY)]


def server_detail_blocks(view: ServerView, st: ServerState) -> list[Block]:
    """The `/mdm show NAME` reply: the state and its action first, then the facts."""
    fields = [
        f"*State*\n{phrases.icon(st)} {phrases.word(st)}",
        f"*Token expires*\n{local_date(view.token_expires_at)}",
        f"*Connection*\n{esc(view.mdm_label) if view.mdm_label else 'none: tokens go by DM'}",
        f"*Token*\n{phrases.token_from(st) if view.token_id else '—'}",
        f"*Release devices*\n{'allowed' if view.release_devices else 'not allowed'}",
        f"*Certificate*\n{esc(view.certificate_subject or '—')}",
        f"*Certificate expires*\n{local_date(view.certificate_not_after)}",
    ]
    blocks: list[Block] = [
        {"type": "header", "text": plain(view.name, 150)},
        section(phrases.sentence(view.name, st)),
    ]
    button = phrases.action_button(st, view.id, view.token_id)
    if button is not None:
        blocks.append({"type": "actions", "block_id": f"server:{view.id}", "elements": [button]})
    return [
        *blocks,
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]},
        context(f"Added by {mention(view.created_by)} {local_date(view.created_at)}"),
    ]
