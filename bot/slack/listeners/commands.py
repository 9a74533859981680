"""The `/mdm` slash command."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.slack import devices, lifecycle
from bot.slack.acks import AnswerInline
from bot.slack.builders import blocks, home_blocks, modals, server_blocks
from bot.slack.listeners import apple_tokens
from bot.slack.services import BotServices, crash_text, new_reference
from core.connections import state as links_state
from core.connections.server_state import state_of
from core.errors import MdmbotError
from core.people import persons as people
from core.roles import Actor, Permission, parse_role
from core.tokens import servers

log = logging.getLogger("mdmbot.bot")
USER_REF = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^@?([UW][A-Z0-9]{2,})$")
Reply = dict[str, Any]
NEW_KEY_AT_APPLE = (
    "In Apple mode a new public key goes to {portal} (the server → Edit → Replace "
    "Certificate); then download its token there and drop the file here."
)
Handler = Callable[[dict[str, Any], str], Reply | None]


def parse_user(text: str) -> str:
    """The Slack user id in `<@U123|name>`, `<@U123>` or `U123`."""
    match = USER_REF.match(text.strip())
    if not match:
        raise MdmbotError(f"“{text.strip()}” isn't a Slack user: mention them, like @jane.")
    return match.group(1) or match.group(2)


def split_command(text: str) -> tuple[str, str]:
    """The subcommand and the rest of the text (a server name may hold spaces or quotes)."""
    parts = text.strip().split(None, 1)
    if not parts:
        return "help", ""
    rest = parts[1].strip() if len(parts) > 1 else ""
    if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'“”":
        rest = rest[1:-1]
    elif len(rest) >= 2 and rest[0] == "“" and rest[-1] == "”":
        rest = rest[1:-1]
    return parts[0].lower(), rest


def register(app: App, svc: BotServices) -> None:
    """Register the `/mdm` command."""
    handlers: dict[str, Callable[[dict[str, Any], str], Reply | None]] = {}

    def reply(text: str, extra: list[blocks.Block] | None = None) -> Reply:
        return {"text": text, "blocks": extra or [blocks.section(text)]}

    def need_name(arg: str, sub: str) -> str:
        if not arg:
            raise MdmbotError(f"Which server? Use `/mdm {sub} NAME`.")
        return arg

    def server_for(user_id: str, permission: Permission, arg: str, sub: str) -> servers.ServerView:
        """Authorise, then find the named server, in one read transaction."""
        with svc.ctx.unit_of_work(readonly=True) as session:
            people.authorize(session, Actor(user_id), permission)
            view = servers.get_server_view(session, need_name(arg, sub))
            return links_state.annotate(session, [view])[0]

    def open_modal(body: dict[str, Any], view: dict[str, Any]) -> None:
        svc.gateway.open_view(body["trigger_id"], view)

    def do_help(body: dict[str, Any], arg: str) -> Reply:
        with svc.ctx.unit_of_work(readonly=True) as session:
            role = people.role_of(session, body["user_id"])
            admins = [] if role else people.administrators(session)
        return {"text": "mdmbot help", "blocks": home_blocks.help_blocks(role, admins, svc.portal)}

    def do_list(body: dict[str, Any], arg: str) -> Reply:
        with svc.ctx.transaction(readonly=True) as connection:
            people.authorize(connection, Actor(body["user_id"]), Permission.VIEW)
            views = links_state.listed(connection)
        return {
            "text": "MDM servers",
            "blocks": server_blocks.server_list_blocks(views, svc.ctx.now(), svc.portal),
        }

    def do_show(body: dict[str, Any], arg: str) -> Reply:
        view = server_for(body["user_id"], Permission.VIEW, arg, "show")
        return {
            "text": blocks.esc(view.name),
            "blocks": server_blocks.server_detail_blocks(
                view, state_of(view, svc.ctx.now(), svc.ctx.settings.apple_portal)
            ),
        }

    def modal_command(
        builder: Callable[[servers.ServerView], dict[str, Any]], sub: str
    ) -> Callable[[dict[str, Any], str], None]:
        def run(body: dict[str, Any], arg: str) -> None:
            view = server_for(body["user_id"], Permission.MANAGE_SERVERS, arg, sub)
            open_modal(body, builder(view))

        return run

    def do_add(body: dict[str, Any], arg: str) -> None:
        svc.authorize(body["user_id"], Permission.MANAGE_SERVERS)
        open_modal(body, modals.add_server_modal(svc.ctx.settings.apple_portal))

    def do_roles(body: dict[str, Any], arg: str) -> Reply:
        with svc.ctx.unit_of_work(readonly=True) as session:
            people.authorize(session, Actor(body["user_id"]), Permission.VIEW)
            holders = people.list_roles(session)
        lines = [f"{blocks.mention(h.slack_id)} — {h.role.value}" for h in holders]
        return reply("\n".join(["*mdmbot roles*", *lines]) if lines else "Nobody holds a role.")

    def do_grant(body: dict[str, Any], arg: str) -> Reply:
        who, _, role_text = arg.partition(" ")
        if not who or not role_text.strip():
            raise MdmbotError(
                "Use `/mdm grant @user ROLE` (Administrator, Site Manager or "
                "Device Enrollment Manager)."
            )
        user, role = parse_user(who), parse_role(role_text)
        with svc.ctx.unit_of_work() as session:
            people.grant_role(session, Actor(body["user_id"]), user, role, svc.ctx.now())
        return reply(f"<@{user}> is now *{role.value}*.")

    def do_revoke(body: dict[str, Any], arg: str) -> Reply:
        user = parse_user(arg or "?")
        with svc.ctx.unit_of_work() as session:
            role = people.revoke_role(session, Actor(body["user_id"]), user, svc.ctx.now())
        return reply(f"<@{user}> is no longer *{role.value}*.")

    def do_offboard(body: dict[str, Any], arg: str) -> Reply:
        user = parse_user(arg or "?")
        svc.authorize(body["user_id"], Permission.MANAGE_SERVERS)
        return reply(lifecycle.open_and_post(svc, Actor(body["user_id"]), user, "departure"))

    def do_password_changed(body: dict[str, Any], arg: str) -> Reply:
        me = body["user_id"]
        return reply(lifecycle.open_and_post(svc, Actor(me), me, "password_change"))

    def sandbox_only(handler: Handler) -> Handler:
        """A command that issues a token: in Apple mode Apple issues them."""

        def refuse_in_apple_mode(body: dict[str, Any], arg: str) -> Reply | None:
            if svc.ctx.settings.apple_mode:
                raise MdmbotError(NEW_KEY_AT_APPLE.format(portal=svc.ctx.settings.apple_portal))
            return handler(body, arg)

        return refuse_in_apple_mode

    handlers.update(
        {
            "help": do_help,
            "list": do_list,
            "show": do_show,
            "add": do_add,
            "token": apple_tokens.token_command(svc)
            if svc.ctx.settings.apple_mode
            else modal_command(
                lambda view: modals.confirm_token_modal(view, now=svc.ctx.now()), "token"
            ),
            "cert": sandbox_only(modal_command(modals.replace_cert_modal, "cert")),
            "edit": modal_command(
                lambda view: modals.edit_server_modal(view, svc.ctx.settings.apple_portal), "edit"
            ),
            "remove": modal_command(modals.confirm_remove_modal, "remove"),
            "roles": do_roles,
            "grant": do_grant,
            "revoke": do_revoke,
            "offboard": do_offboard,
            "password-changed": do_password_changed,
        }
    )
    handlers.update(devices.commands(svc, open_modal))
    slow = {"add", "token", "cert", "edit", "remove", "offboard", "password-changed"}
    slow |= devices.SLOW

    def after_ack(handler: Handler, body: dict[str, Any], arg: str, respond: Respond) -> None:
        """A slow command's work, off bolt's listener pool so that the next acks never wait."""
        try:
            result = handler(body, arg)
            if result:
                respond(response_type="ephemeral", replace_original=False, **result)
        except MdmbotError as exc:
            message = blocks.esc_message(exc.message)
            respond(
                text=message,
                blocks=[blocks.section(f":no_entry: {message}")],
                response_type="ephemeral",
                replace_original=False,
            )
        except Exception as error:
            reference = new_reference()
            log.error("unhandled error ref=%s: %s", reference, type(error).__name__, exc_info=error)
            respond(
                text=crash_text(reference),
                response_type="ephemeral",
                replace_original=False,
            )

    @app.command("/mdm", middleware=[AnswerInline()])
    def on_mdm(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        sub, arg = split_command(body.get("text") or "")
        handler = handlers.get(sub)
        if handler is None:
            ack(text=f"I don't know `/mdm {blocks.esc(sub)}`. Try `/mdm help`.")
            return
        if sub in slow:
            ack()
            svc.after_ack.submit(after_ack, handler, body, arg, respond)
            return
        try:
            result = handler(body, arg)
        except MdmbotError as exc:
            message = blocks.esc_message(exc.message)
            ack(text=message, blocks=[blocks.section(f":no_entry: {message}")])
            return
        ack(**(result or {}))
