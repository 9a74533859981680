"""Buttons and the shortcut: App Home server actions (alert and checklist buttons: lifecycle)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App

from bot.slack.builders import api_blocks, home_blocks, modals
from bot.slack.services import BotServices
from core.asm import accounts as api_accounts
from core.errors import MdmbotError
from core.roles import Actor, Permission
from core.tokens.servers import ServerView

ADD_SHORTCUT = "add_mdm_server"


def server_modals(
    now: Callable[[], datetime], portal: str
) -> dict[str, Callable[[ServerView], dict[str, Any]]]:
    """The modal each App Home server action opens (renewing says when the token expires;
    `portal` names Apple's portal of the mode)."""
    return {
        "server_token": lambda view: modals.confirm_token_modal(view, now=now()),
        "server_cert": modals.replace_cert_modal,
        "server_edit": lambda view: modals.edit_server_modal(view, portal),
        "server_remove": modals.confirm_remove_modal,
    }


def open_checked(
    svc: BotServices,
    body: dict[str, Any],
    permission: Permission,
    build: Callable[[], dict[str, Any]],
) -> None:
    """Open the modal `build` returns if the presser may; otherwise show why in a modal."""
    try:
        svc.authorize(body["user"]["id"], permission)
        view = build()
    except MdmbotError as exc:
        view = modals.message_modal("mdmbot", exc.message)
    svc.gateway.open_view(body["trigger_id"], view)


def register(app: App, svc: BotServices) -> None:
    """Register the App Home button listeners."""

    def add_modal() -> dict[str, Any]:
        return modals.add_server_modal(svc.ctx.settings.apple_portal)

    @app.action("home_add")
    def on_add(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        open_checked(svc, body, Permission.MANAGE_SERVERS, add_modal)

    @app.shortcut(ADD_SHORTCUT)
    def on_shortcut(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        open_checked(svc, body, Permission.MANAGE_SERVERS, add_modal)

    builders = server_modals(svc.ctx.now, svc.ctx.settings.apple_portal)

    def open_for(body: dict[str, Any], action_id: str, value: object) -> None:
        build = builders.get(action_id)
        if build is None:
            return
        open_checked(svc, body, Permission.MANAGE_SERVERS, lambda: build(svc.server_by_id(value)))

    def listener(action_id: str) -> Callable[..., None]:
        def on_press(ack: Ack, body: dict[str, Any]) -> None:
            ack()
            open_for(body, action_id, body["actions"][0].get("value"))

        return on_press

    for action_id in builders:
        app.action(action_id)(listener(action_id))

    @app.action(api_blocks.REVOKE)
    def on_revoke_api_account(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        user = body["user"]["id"]
        client_id = str(body["actions"][0].get("value") or "")
        try:
            with svc.ctx.unit_of_work() as session:
                api_accounts.revoke_account(session, Actor(user), client_id, svc.ctx.now())
        except MdmbotError as exc:
            svc.gateway.open_view(body["trigger_id"], modals.message_modal("mdmbot", exc.message))
        svc.refresh_home(user)

    @app.action(home_blocks.MORE)
    def on_more(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        chosen = (body["actions"][0].get("selected_option") or {}).get("value", "")
        action_id, _, value = str(chosen).partition(":")
        open_for(body, action_id, value)
