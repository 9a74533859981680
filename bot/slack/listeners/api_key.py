"""The "Update API key" button and modal: for Administrators; the key goes to the vault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App

from bot.slack.builders import blocks, modals, phrases
from bot.slack.installs import BUSY
from bot.slack.services import BotServices
from core.connections import api_key, installs
from core.errors import InvalidInput, MdmbotError
from core.roles import Actor, Permission


def register(app: App, svc: BotServices, after: Callable[[], object]) -> None:
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
        if install_id is not None and not svc.on_mdm(
            lambda: _install_after_key(svc, install_id, user_id, after)
        ):
            svc.try_dm(user_id, BUSY)


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
