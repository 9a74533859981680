"""Apple mode: server tokens from Apple's portal, dropped in the bot's DM or uploaded.

A `.p7m` file shared in a DM with the bot is taken in for the server whose certificate it is
encrypted to (asked when several match); `/mdm token NAME`, "Upload token" and, in Apple mode,
every "Get token"/"Renew token" button open the upload modal instead of issuing a token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App

from bot.slack import lifecycle
from bot.slack.builders import blocks, lifecycle_blocks, modals, phrases
from bot.slack.download import DEADLINE
from bot.slack.listeners.actions import open_checked
from bot.slack.services import BotServices
from core.apple import intake
from core.apple.envelope import MAX_BYTES, TokenEnvelope, read_token_file
from core.apple.intake import TakenIn
from core.apple.refusals import TokenRefused
from core.connections import installs
from core.errors import MdmbotError
from core.roles import Actor, Permission
from core.tokens import servers
from core.tokens.certificates import load_certificate

log = logging.getLogger("mdmbot.apple")
CHOOSE = "apple_token_choose_server"  # a button per matching server, when several match
TOO_LARGE = "That file is too large to be a server token (a few KiB); drop the .p7m file."
NO_ISSUING = (
    "In Apple mode mdmbot issues no tokens: download the server's token in {portal} "
    "and drop the .p7m file in a DM with mdmbot, or use `/mdm token NAME`."
)
RENEWING = ("server_token", lifecycle_blocks.RENEW, lifecycle_blocks.ROTATE, phrases.FROM_APPLE)


def taken_text(taken: TakenIn, outcome: installs.InstallOutcome | None, expires: str) -> str:
    """What the person is told once the token is taken in (and installed, or not)."""
    name = f"*{blocks.esc(taken.server_name)}*"
    if taken.install_id is None:
        return (
            f":white_check_mark: Took in `{blocks.esc(taken.filename)}` for {name}: it is the "
            f"active token now and expires {expires}. Upload the same file to the MDM server; "
            "mdmbot shows it in use once Apple sees the server connect."
        )
    if outcome is not None and outcome.installed:
        return (
            f":white_check_mark: Took in the token for {name} and installed it in "
            f"{blocks.esc(outcome.label)}; it expires {expires}."
        )
    why = (outcome.error if outcome else None) or "another mdmbot process is installing it."
    return (
        f":warning: Took in the token for {name} (the active one now), but it could not be "
        f"installed: {blocks.esc(why)} mdmbot keeps retrying."
    )


def take_in(svc: BotServices, user: str, server_id: int | None, token: TokenEnvelope) -> str:
    """Take the token in for the server (or the one its certificate names), install it, and
    say what happened; MdmbotError when refused (nothing changed)."""
    ctx, actor = svc.ctx, Actor(user)
    try:
        with ctx.unit_of_work() as session:
            if server_id is None:
                found = intake.matching_servers(session, token)
                if len(found) != 1:
                    raise _Unmatched([(s.id or 0, s.name) for s in found])
                server = found[0]
            else:
                server = servers.find_server_by_id(session, server_id)
            server_id = server.id
            taken = intake.take_in(session, ctx.vault, actor, server, token, ctx.now(), via="slack")
    except TokenRefused as exc:
        note_refused(svc, user, server_id, token, exc)
        raise
    outcome = None
    if taken.install_id is not None:
        outcome = installs.attempt(
            ctx.unit_of_work, ctx.vault, ctx.installer, taken.install_id, ctx.holder, ctx.now
        )
    with ctx.unit_of_work(readonly=True) as session:
        view = servers.get_server_view_by_id(session, taken.server_id)
    svc.refresh_home(user)
    return taken_text(taken, outcome, blocks.local_date(view.token_expires_at))


def note_refused(
    svc: BotServices, user: str, server_id: int | None, token: TokenEnvelope, exc: TokenRefused
) -> None:
    """Remember a refused file for the Home and post its one alert (not again on a retry)."""
    if server_id is None:
        return
    now = svc.ctx.now()
    with svc.ctx.unit_of_work() as session:
        due = intake.note_refused(session, Actor(user), server_id, token, exc, now)
    if due:
        svc.after_ack.submit(lifecycle.post_refusals, svc, now)


class _Unmatched(MdmbotError):
    """No server, or several, hold the certificate the token is encrypted to."""

    def __init__(self, candidates: list[tuple[int, str]]) -> None:
        self.candidates = candidates
        text = (
            "Several MDM servers share the certificate this token is encrypted to; which is it?"
            if candidates
            else "No MDM server in mdmbot has the certificate this token is encrypted to; use "
            "`/mdm token NAME` to take it in for a server."
        )
        super().__init__(text)


def _download(svc: BotServices, file: dict[str, Any], deadline: float = 10.0) -> TokenEnvelope:
    data = svc.gateway.download_file(
        file, limit=MAX_BYTES, too_large=TOO_LARGE, deadline=deadline
    )
    name = str(file.get("name") or "the file")
    return read_token_file(data, name, svc.ctx.settings.apple_portal)


def register(app: App, svc: BotServices) -> None:
    """Register the Apple-mode token listeners (before the sandbox's, which they replace)."""
    if svc.ctx.settings.apple_mode:
        _register_apple(app, svc)

    @app.event("message")
    def on_other_message(event: dict[str, Any]) -> None:
        """Other DM messages (message.im): nothing to do, but answered so Slack never retries."""


def _register_apple(app: App, svc: BotServices) -> None:
    """The listeners that replace issuing with taking in Apple's tokens."""

    def open_upload(body: dict[str, Any], server_id: object | None) -> None:
        open_checked(
            svc,
            body,
            Permission.MANAGE_SERVERS,
            lambda: modals.apple_token_modal(
                svc.server_by_id(server_id) if server_id else None, svc.ctx.settings.apple_portal
            ),
        )

    def server_of(action_id: str, value: str) -> object:
        if action_id in (lifecycle_blocks.RENEW, lifecycle_blocks.ROTATE):  # a token id
            with svc.ctx.unit_of_work(readonly=True) as session:
                return servers.server_of_token(session, int(value))[0].id
        return value

    def on_renew(action_id: str) -> Callable[..., None]:
        def pressed(ack: Ack, body: dict[str, Any]) -> None:
            ack()
            value = str(body["actions"][0].get("value") or "")
            try:
                server_id = server_of(action_id, value)
            except (MdmbotError, ValueError):
                server_id = None
            open_upload(body, server_id)

        return pressed

    for action_id in RENEWING:
        app.action(action_id)(on_renew(action_id))

    @app.view(modals.APPLE_TOKEN)
    def on_upload(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = body["user"]["id"]
        try:
            svc.authorize(user, Permission.MANAGE_SERVERS)
            files = modals.input_value(view, modals.APPLE_FILE).get("files") or []
            if len(files) != 1:
                raise MdmbotError(
                    f"Attach the one .p7m file {svc.ctx.settings.apple_portal} gave you."
                )
            token = _download(svc, files[0], DEADLINE)
            server_id = svc.gateway.read_metadata(view).get("server_id")
            with svc.ctx.unit_of_work(readonly=True) as session:
                if server_id is not None:
                    server = servers.find_server_by_id(session, server_id)
                    intake.check(session, server, token, svc.ctx.now())
        except TokenRefused as exc:
            note_refused(svc, user, server_id, token, exc)
            ack(response_action="errors", errors={modals.APPLE_FILE: exc.message[:2000]})
            return
        except MdmbotError as exc:
            ack(response_action="errors", errors={modals.APPLE_FILE: exc.message[:2000]})
            return
        ack(
            response_action="update",
            view=modals.message_modal("Token from Apple", "Taking in the token…"),
        )
        svc.on_mdm(finish, body, user, server_id, token)

    def finish(body: dict[str, Any], user: str, server_id: int | None, token: Any) -> None:
        try:
            text = take_in(svc, user, server_id, token)
        except MdmbotError as exc:
            text = f":no_entry: {blocks.esc_message(exc.message)}"
        svc.gateway.update_view(body["view"]["id"], modals.message_modal("Token from Apple", text))

    @app.view(modals.CONFIRM_TOKEN)
    def on_issue(ack: Ack, body: dict[str, Any]) -> None:
        try:
            svc.authorize(body["user"]["id"], Permission.MANAGE_SERVERS)
            text = NO_ISSUING.format(portal=svc.ctx.settings.apple_portal)
        except MdmbotError as exc:
            text = exc.message
        ack(response_action="update", view=modals.message_modal("Server token", text))

    @app.view(modals.REPLACE_CERT)
    def on_certificate(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        actor, now = Actor(body["user"]["id"]), svc.ctx.now()
        try:
            svc.authorize(actor.user_id, Permission.MANAGE_SERVERS)
            files = modals.input_value(view, "certificate").get("files") or []
            if len(files) != 1:
                raise MdmbotError("Attach one public key certificate (.pem or .der).")
            loaded = load_certificate(svc.gateway.download_certificate(files[0]), now=now)
            with svc.ctx.unit_of_work() as session:
                server_id = svc.gateway.read_metadata(view).get("server_id")
                server = servers.find_server_by_id(session, server_id)
                intake.keep_certificate(session, actor, server, loaded, now)
                name = server.name
        except MdmbotError as exc:
            ack(response_action="errors", errors={"certificate": exc.message[:2000]})
            return
        text = (
            f"mdmbot now checks the tokens for *{blocks.esc(name)}* against this certificate. "
            f"In {svc.ctx.settings.apple_portal}, upload it as the server's public key, then "
            "download a new "
            "token there and drop it in a DM with mdmbot."
        )
        ack(response_action="update", view=modals.message_modal("Replace certificate", text))

    @app.event({"type": "message", "subtype": "file_share"})
    def on_file(event: dict[str, Any]) -> None:
        if event.get("channel_type") != "im" or event.get("bot_id"):
            return
        user, files = str(event.get("user") or ""), event.get("files") or []
        if user and files:
            svc.after_ack.submit(dropped, user, files[0])

    def dropped(user: str, file: dict[str, Any], server_id: int | None = None) -> None:
        extra: list[blocks.Block] | None = None
        try:
            svc.authorize(user, Permission.MANAGE_SERVERS)
            text = take_in(svc, user, server_id, _download(svc, file))
        except _Unmatched as exc:
            text = f":question: {blocks.esc_message(exc.message)}"
            link = str(file.get("url_private_download") or file.get("url_private") or "")
            extra = [choices(exc.candidates, link, str(file.get("name") or ""))]
        except MdmbotError as exc:
            text = f":no_entry: {blocks.esc_message(exc.message)}"
        svc.try_dm(user, text, extra if extra and extra[0]["elements"] else None)

    def choices(candidates: list[tuple[int, str]], link: str, name: str) -> blocks.Block:
        return {
            "type": "actions",
            "block_id": CHOOSE,
            "elements": [
                blocks.button(f"For {server_name}"[:75], f"{CHOOSE}:{server_id}",
                              f"{server_id}|{name}|{link}"[:2000])
                for server_id, server_name in candidates[:5]
            ],
        }  # fmt: skip

    @app.action({"type": "block_actions", "block_id": CHOOSE})
    def on_choose(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        server_id, name, link = str(body["actions"][0].get("value") or "").split("|", 2)
        file = {"name": name, "url_private_download": link}
        svc.after_ack.submit(dropped, body["user"]["id"], file, int(server_id))


def token_command(svc: BotServices) -> Callable[[dict[str, Any], str], None]:
    """`/mdm token NAME` in Apple mode: the upload modal for that server."""

    def run(body: dict[str, Any], arg: str) -> None:
        if not arg:
            raise MdmbotError("Which server? Use `/mdm token NAME`.")
        svc.authorize(body["user_id"], Permission.MANAGE_SERVERS)
        view = svc.server_by_name(arg)
        portal = svc.ctx.settings.apple_portal
        svc.gateway.open_view(body["trigger_id"], modals.apple_token_modal(view, portal))

    return run
