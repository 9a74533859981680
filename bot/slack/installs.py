"""New tokens of connected servers: installed into the MDM server, the file DM'd only on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, Respond

from bot import metrics
from bot.slack.builders import blocks, modals, phrases
from bot.slack.builders.blocks import Block
from bot.slack.gateway import SlackUnavailable
from core.connections import api_key, installs, state
from core.connections.links import ConnectionSpec
from core.connections.server_state import ServerState
from core.errors import InvalidInput, MdmbotError
from core.people import rotation
from core.people.rotation import CaseView
from core.roles import Actor, Permission
from core.tokens import issuance, servers
from core.tokens.issuance import IssuedToken
from core.tokens.servers import ServerView

if TYPE_CHECKING:
    from bot.slack.services import BotServices, Delivery

log = logging.getLogger("mdmbot.installs")


def installed_text(label: str, server_name: str, expires_at: datetime) -> str:
    """What the person sees once the MDM server took the token."""
    return (
        f"Installed in {label} — waiting for its first use. The new token for "
        f"*{blocks.esc(server_name)}* expires {blocks.local_date(expires_at)}."
    )


def install_failed_text(
    label: str, server_name: str, error: str, *, file_sent: bool, st: ServerState | None = None
) -> str:
    """Why the install failed, what that stops, and what happens next."""
    where = "The file is in your DMs" if file_sent else "Slack didn't deliver the file either"
    text = (
        f"Couldn't install the new token for *{blocks.esc(server_name)}* in {label}: "
        f"{blocks.esc(error)} {where}."
    )
    if st is not None and st.replaced:
        text += f" The old token already stopped working, so {phrases.CANNOT_ENROL} until then."
    return f"{text} {phrases.who_acts(st)}" if st is not None else text


def failed_install_comment(issued: IssuedToken, st: ServerState | None, error: str) -> str:
    """The DM that goes with the file after a failed install: the failure first."""
    name = blocks.esc(issued.server_name)
    if st is None:
        return f"mdmbot couldn't install the new token for *{name}*: {blocks.esc(error)}"
    lines = [f":warning: {phrases.problem(issued.server_name, st)}", phrases.who_acts(st)]
    lines += [
        "Or upload this file to the MDM server yourself, where it asks for the Apple server "
        f"token. It expires {blocks.local_date(issued.expires_at)}.",
        "Keep the file private: with the server's private key it lets anyone act as this MDM "
        "server.",
    ]
    return "\n".join(lines)


def deliver_connected(
    svc: BotServices, issued: IssuedToken, user_id: str, spec: ConnectionSpec
) -> Delivery:
    """Activate the token and install it now; on failure DM the file as without a connection."""
    from bot.slack.services import Delivery

    actor, ctx = Actor(user_id), svc.ctx
    try:
        with ctx.unit_of_work() as session:
            activation = installs.issue_through(session, actor, issued.token_id, spec, ctx.now())
            install_id = installs.install_id_of(session, issued.token_id)
    except MdmbotError as exc:
        with ctx.unit_of_work() as session:
            issuance.discard_token(session, actor, issued.token_id, ctx.now(), "not activated")
        return Delivery(False, exc.message)
    metrics.tokens_issued.inc()
    assert install_id is not None
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    svc.refresh_home(user_id)
    if outcome is not None and outcome.installed:
        text = installed_text(spec.label(), issued.server_name, issued.expires_at)
        return Delivery(True, text, activation=activation, issued=issued)
    error = (outcome.error if outcome else None) or "another mdmbot process is installing it."
    found = svc.server_state(server_id=issued.server_id)
    st = found[1] if found else None
    comment = failed_install_comment(issued, st, error)
    try:
        channel = svc.gateway.open_dm(user_id)
        svc.gateway.send_file(channel, issued.filename, issued.content, comment)
        sent = True
    except SlackUnavailable as exc:
        log.warning("could not DM the token file after a failed install: %s", exc.error)
        sent = False
    text = install_failed_text(spec.label(), issued.server_name, error, file_sent=sent, st=st)
    return Delivery(True, text, activation=activation, issued=issued)


def renewed_notice(
    label: str, server_name: str, installed: bool, error: str | None, st: ServerState | None = None
) -> str:
    """The notice an automatic renewal posts instead of an expiry alert."""
    if installed:
        return (
            f":recycle: Renewed the token for *{blocks.esc(server_name)}* automatically and "
            f"installed it in {label} — waiting for its first use."
        )
    text = (
        f":warning: Renewed the token for *{blocks.esc(server_name)}* automatically but "
        f"couldn't install it in {label}: {blocks.esc(error or '')}"
    )
    if st is None:
        return text
    if st.replaced:
        text += f" The old token stopped working, so {phrases.CANNOT_ENROL} until then."
    return f"{text}\n{phrases.who_acts(st)}"


def notice_blocks(text: str, view: ServerView | None, st: ServerState | None) -> list[Block]:
    """A notice with the state's one button (Install again, Update API key)."""
    found = phrases.action_button(st, view.id, view.token_id) if view and st else None
    if found is None:
        return [blocks.section(text)]
    return [blocks.section(text), {"type": "actions", "block_id": "notice", "elements": [found]}]


RENEW_ALL = "renew_all_install"


def with_renew_all(svc: BotServices, case: CaseView, blocks_: list[Block]) -> list[Block]:
    """A checklist's blocks with "Renew all and install" when items left are connected."""
    left = [i.token_id for i in case.items if i.done_at is None and not i.replaced]
    if case.status != "open" or not left:
        return blocks_
    with svc.ctx.unit_of_work(readonly=True) as session:
        connected = state.connected_tokens(session, left)
    if not connected or len(blocks_) >= blocks.MAX_MESSAGE_BLOCKS:
        return blocks_
    names = ", ".join(i.server_name for i in case.items if i.token_id in connected)
    bulk = blocks.button(f"Renew and install {names}", RENEW_ALL, str(case.id), "primary")
    action = {"type": "actions", "block_id": f"renew_all:{case.id}", "elements": [bulk]}
    return [*(_unstyled(b) for b in blocks_[:-1]), action, blocks_[-1]]


def _unstyled(block: Block) -> Block:
    """A checklist line whose button gives up "primary" to the bulk button (one green button)."""
    accessory = block.get("accessory")
    if not accessory or "style" not in accessory:
        return block
    return {**block, "accessory": {k: v for k, v in accessory.items() if k != "style"}}


def renew_all(svc: BotServices, case_id: int, user_id: str) -> str:
    """Renew and install every connected token left on a checklist; one line per server."""
    svc.authorize(user_id, Permission.MANAGE_SERVERS)
    with svc.ctx.unit_of_work(readonly=True) as session:
        case = rotation.get_case(session, case_id)
        left = [i for i in case.items if i.done_at is None and not i.replaced]
        connected = state.connected_tokens(session, [i.token_id for i in left])
    lines = []
    for item in left:
        if item.token_id not in connected:
            lines.append(f"*{blocks.esc(item.server_name)}*: not connected; use its button.")
            continue
        try:
            with svc.ctx.unit_of_work() as session:
                server, _ = servers.server_of_token(session, item.token_id)
                issued = issuance.issue_token(
                    session, svc.ctx.vault, Actor(user_id), server, svc.ctx.now(),
                    expected=item.token_id,
                )  # fmt: skip
        except MdmbotError as exc:
            lines.append(f"*{blocks.esc(item.server_name)}*: {exc.message}")
            continue
        outcome = svc.deliver(issued, user_id)
        lines.append(outcome.message)
        if outcome.ok:
            svc.notify_origin({"origin": "rotation", "case_id": str(case_id)}, user_id, outcome)
    return "\n".join(lines) or "Nothing is left to renew on this checklist."


def install_again(svc: BotServices, server_id: str, user_id: str) -> str:
    """Push a server's active token to its MDM server now (`token push`); what to tell."""
    svc.authorize(user_id, Permission.MANAGE_SERVERS)
    with svc.ctx.unit_of_work() as session:
        server = servers.find_server_by_id(session, server_id)
        install_id = installs.push_active(session, server, user_id, svc.ctx.now())
        name = server.name
    ctx = svc.ctx
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    svc.refresh_home(user_id)
    if outcome is None or outcome.skipped:
        return f"mdmbot is already installing the token for *{blocks.esc(name)}*."
    if outcome.installed:
        return (
            f"Installed the token for *{blocks.esc(name)}* in {outcome.label} — waiting for its "
            "first use."
        )
    found = svc.server_state(server_id=int(server_id))
    who = f" {phrases.who_acts(found[1])}" if found else ""
    return (
        f"Couldn't install the token for *{blocks.esc(name)}* in {outcome.label}: "
        f"{blocks.esc(outcome.error or '')}{who}"
    )


def register(app: App, svc: BotServices, after: Callable[[], object]) -> None:
    """The "Renew all and install" button of checklists, "Install again" and "Update API key"."""
    register_api_key(app, svc, after)

    @app.action(RENEW_ALL)
    def on_press(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        user_id = body["user"]["id"]
        case_id = int(body["actions"][0].get("value") or 0)

        def run() -> None:
            try:
                text = renew_all(svc, case_id, user_id)
            except MdmbotError as exc:
                text = exc.message
            svc.try_dm(user_id, text)

        svc.background.submit(run)

    @app.action(phrases.INSTALL_AGAIN)
    def on_install_again(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        user_id = str(body["user"]["id"])
        server_id = str(body["actions"][0].get("value") or "")

        def run() -> None:
            try:
                text = install_again(svc, server_id, user_id)
                after()
            except MdmbotError as exc:
                text = f":no_entry: {exc.message}"
            svc.answer(body, respond, text)

        svc.background.submit(run)


def register_api_key(app: App, svc: BotServices, after: Callable[[], object]) -> None:
    """"Update API key": a modal for Administrators; the key goes to the vault, then installs."""

    @app.action(phrases.UPDATE_KEY)
    def on_press(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        server_id = body["actions"][0].get("value")
        try:
            svc.authorize(body["user"]["id"], Permission.MANAGE_ROLES)
            view = modals.api_key_modal(svc.server_by_id(server_id))
        except MdmbotError as exc:
            view = modals.message_modal("mdmbot", exc.message)
        svc.gateway.open_view(body["trigger_id"], view)

    @app.view(modals.UPDATE_KEY)
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = str(body["user"]["id"])
        key = str(modals.input_value(view, modals.MDM_API_KEY).get("value") or "")
        server_id = svc.gateway.read_metadata(view).get("server_id")
        try:
            with svc.ctx.unit_of_work() as session:
                install_id = api_key.update_api_key(
                    session, svc.ctx.vault, Actor(user_id), server_id, key, svc.ctx.now()
                )
        except InvalidInput as exc:
            ack(response_action="errors", errors={modals.MDM_API_KEY: exc.message})
            return
        except MdmbotError as exc:
            ack(response_action="update", view=modals.message_modal("Not saved", exc.message))
            return
        ack(response_action="update", view=modals.message_modal("API key saved", SAVED))
        if install_id is not None:
            svc.background.submit(_install_after_key, svc, install_id, user_id, after)


SAVED = "The new API key is stored encrypted. mdmbot is installing the token now."


def _install_after_key(
    svc: BotServices, install_id: int, user_id: str, after: Callable[[], object]
) -> None:
    """Install with the new key and tell the Administrator how it went."""
    ctx = svc.ctx
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    after()
    svc.refresh_home(user_id)
    if outcome is None or outcome.skipped:
        return
    name, label = blocks.esc(outcome.server_name), outcome.label
    if outcome.installed:
        text = f"Installed the token for *{name}* in {label} with the new key."
    else:
        text = f"The new key didn't work for *{name}*: {blocks.esc(outcome.error or '')}"
    svc.try_dm(user_id, text)
