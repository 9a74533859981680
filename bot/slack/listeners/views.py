"""Modal submissions: add a server, replace a certificate, confirm a token, remove, edit."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from sqlmodel import Session

from bot.slack import lifecycle
from bot.slack.builders import blocks, modals
from bot.slack.installs import BUSY
from bot.slack.listeners.linking import link_in_apple
from bot.slack.services import BotServices
from core.connections import links
from core.connections.links import ConnectionSpec
from core.devices import unlink
from core.errors import (
    CertificateError,
    InvalidName,
    MdmbotError,
    PermissionDenied,
    TokenConflict,
)
from core.models import Server
from core.roles import Actor, Permission
from core.tokens import issuance, servers
from core.tokens.certificates import load_certificate
from core.tokens.issuance import CURRENT, Current, IssuedToken
from core.tokens.names import clean_name

log = logging.getLogger("mdmbot.bot")

# What the add modal says under a connection field it refuses (the CLI names its options).
CONNECTION_WORDS = {
    modals.MDM_KIND: "Choose NanoDEP or Fleet.",
    modals.MDM_URL: "Give the MDM server's http(s) URL, such as https://nanodep.school.example.",
    modals.MDM_DEP_NAME: "A DEP name has no “/” and no control characters.",
    modals.MDM_API_KEY: "Give the API key mdmbot uses to install tokens there.",
    modals.AUTO_RENEW: f"Give 1 to {links.MAX_AUTO_RENEW_DAYS} days, or leave it empty.",
}
LINKING = "Linking the server with Apple… what to do next will be here and in your DMs."
CONNECTION_BLOCKS = (modals.MDM_URL, modals.MDM_DEP_NAME, modals.MDM_API_KEY, modals.AUTO_RENEW)
# Valid values put in place of a refused field, so that the next field is checked in the same pass.
STAND_IN = {
    modals.MDM_URL: "https://mdm.invalid",
    modals.MDM_DEP_NAME: "x",
    modals.MDM_API_KEY: "x",
}


def register(app: App, svc: BotServices) -> None:
    """Register the modal submission listeners."""

    def allowed(ack: Ack, body: dict[str, Any]) -> bool:
        try:
            svc.authorize(body["user"]["id"], Permission.MANAGE_SERVERS)
        except PermissionDenied as exc:
            ack(response_action="update", view=modals.message_modal("Not allowed", exc.message))
            return False
        return True

    def target(session: Session, view: dict[str, Any]) -> Server:
        return servers.find_server_by_id(session, svc.gateway.read_metadata(view).get("server_id"))

    def expects(view: dict[str, Any]) -> int | Current | None:
        """The active token the confirmation was shown for (compare-and-swap)."""
        meta = svc.gateway.read_metadata(view)
        if "expects" not in meta:
            return CURRENT
        return None if meta["expects"] is None else int(meta["expects"])

    def certificate(view: dict[str, Any]) -> bytes:
        files = modals.input_value(view, "certificate").get("files") or []
        if len(files) != 1:
            raise CertificateError("Attach one public key certificate (.pem or .der).")
        return svc.gateway.download_certificate(files[0])

    def finish(ack: Ack, body: dict[str, Any], issued: IssuedToken, title: str) -> None:
        ack(
            response_action="update",
            view=modals.message_modal(
                title,
                f"Issuing the token for *{blocks.esc(issued.server_name)}* and sending it "
                "to you by DM…",
            ),
        )
        show_outcome(body, issued, title)

    def show_outcome(body: dict[str, Any], issued: IssuedToken, title: str) -> None:
        if not svc.connected(issued.server_id):
            delivered(body, issued, title)
        elif not svc.on_mdm(delivered, body, issued, title):
            with svc.ctx.unit_of_work() as session:
                issuance.discard_token(
                    session, Actor(body["user"]["id"]), issued.token_id, svc.ctx.now(), "busy"
                )
            update(body, modals.message_modal(title, f":warning: {BUSY} Nothing was changed."))

    def delivered(body: dict[str, Any], issued: IssuedToken, title: str, note: str = "") -> None:
        user = body["user"]["id"]
        outcome = svc.deliver(issued, user)
        text = outcome.message if outcome.ok else f":warning: {outcome.message}"
        text += f"\n:warning: {blocks.esc(note)}" if note else ""
        if outcome.reference:
            text += f"\nReference: `{outcome.reference}`"
        try:
            svc.gateway.update_view(body["view"]["id"], modals.message_modal(title, text))
        except MdmbotError:
            log.info("could not update the modal for %s", user)
        if outcome.ok:
            svc.notify_origin(svc.gateway.read_metadata(body["view"]), user, outcome)
        elif outcome.tokenless is not None:
            get = blocks.button("Get token", "server_token", str(outcome.tokenless), "primary")
            svc.try_dm(user, text, [{"type": "actions", "elements": [get]}])
        else:
            svc.try_dm(user, text)

    @app.view(modals.ADD_SERVER)
    def on_add(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body):
            return
        errors: dict[str, str] = {}
        name = (modals.input_value(view, "name").get("value") or "").strip()
        release = bool(modals.input_value(view, "release").get("selected_options"))
        try:
            clean_name(name)
        except InvalidName as exc:
            errors["name"] = exc.message
        name_taken(name, errors)
        if modals.input_value(view, modals.MDM_KIND).get("selected_option"):
            spec = connection_of(view, name, errors)
            if spec is None or errors:
                ack(response_action="errors", errors=errors)
                return
            add_connected(ack, body, spec, name, release)
            return
        if any(modals.input_value(view, block).get("value") for block in CONNECTION_BLOCKS):
            errors[modals.MDM_KIND] = "Choose the MDM server software, or leave its fields empty."
        loaded = None
        try:
            if not modals.input_value(view, "certificate").get("files"):
                raise CertificateError(
                    "Attach the public key certificate, or choose the MDM server software below "
                    "so that mdmbot fetches it."
                )
            loaded = load_certificate(certificate(view), now=svc.ctx.now())
        except CertificateError as exc:
            errors["certificate"] = exc.message
        if loaded is not None and not errors and svc.ctx.settings.apple_mode:
            ack(response_action="update", view=modals.message_modal("Add MDM server", LINKING))
            svc.background.submit(link_in_apple, svc, body["user"]["id"], body["view"]["id"],
                                  name, release, loaded)  # fmt: skip
            return
        if loaded is not None and not errors:
            try:
                with svc.ctx.unit_of_work() as session:
                    issued = servers.add_server(
                        session,
                        svc.ctx.vault,
                        Actor(body["user"]["id"]),
                        name=name,
                        certificate=loaded,
                        release_devices=release,
                        now=svc.ctx.now(),
                    )
            except MdmbotError as exc:
                errors[exc.field if exc.field in ("name", "certificate") else "name"] = exc.message
        if errors:
            ack(response_action="errors", errors=errors)
            return
        finish(ack, body, issued, "Add MDM server")

    def connection_of(
        view: dict[str, Any], name: str, errors: dict[str, str]
    ) -> ConnectionSpec | None:
        """The connection the add modal describes; every field's problem goes to `errors`."""
        if modals.input_value(view, "certificate").get("files"):
            errors["certificate"] = "Leave this empty: the certificate is fetched from the MDM."
        days = str(modals.input_value(view, modals.AUTO_RENEW).get("value") or "").strip()
        if days and not (days.isascii() and days.isdigit()):
            errors[modals.AUTO_RENEW] = CONNECTION_WORDS[modals.AUTO_RENEW]
            days = ""
        given = {
            block: (modals.input_value(view, block).get("value") or "").strip() or None
            for block in (modals.MDM_URL, modals.MDM_DEP_NAME, modals.MDM_API_KEY)
        }
        given[modals.MDM_DEP_NAME] = given[modals.MDM_DEP_NAME] or name or "x"
        kind = modals.input_value(view, modals.MDM_KIND)["selected_option"].get("value", "")
        for _ in range(len(CONNECTION_WORDS)):  # each refused field once, so all show together
            try:
                spec = links.make_spec(
                    kind if kind in modals.MDM_KINDS else "",
                    url=given[modals.MDM_URL],
                    dep_name=given[modals.MDM_DEP_NAME],
                    api_key=given[modals.MDM_API_KEY],
                    base_url=links.nanodep_base_url(
                        svc.ctx.settings.mdmbot_dep_public_url,
                        apple_mode=svc.ctx.settings.apple_mode,
                    ),
                    auto_renew_days=int(days) if days else None,
                )
                break
            except MdmbotError as exc:
                block = exc.field if exc.field in CONNECTION_WORDS else "name"
                if block in errors or block not in given:
                    errors.setdefault(block, CONNECTION_WORDS.get(block) or exc.message)
                    return None
                errors[block] = CONNECTION_WORDS.get(block) or exc.message
                given[block] = STAND_IN[block]
        else:
            return None
        return None if errors else spec

    def name_taken(name: str, errors: dict[str, str]) -> None:
        """A name another server has goes to `errors` with the other fields' problems."""
        if "name" in errors:
            return
        try:
            with svc.ctx.unit_of_work(readonly=True) as session:
                servers.check_name_free(session, clean_name(name))
        except MdmbotError as exc:
            errors["name"] = exc.message

    def add_connected(
        ack: Ack, body: dict[str, Any], spec: ConnectionSpec, name: str, release: bool
    ) -> None:
        """Fetch the certificate, add the server with its connection, install its first token."""
        title, label = "Add MDM server", spec.label()
        fetching = f"Fetching the certificate from {blocks.esc(label)} and issuing the token…"
        ack(response_action="update", view=modals.message_modal(title, fetching))
        if not svc.on_mdm(fetch_and_add, body, spec, name, release):
            update(body, modals.message_modal(title, f":warning: {BUSY} Nothing was added."))

    def fetch_and_add(body: dict[str, Any], spec: ConnectionSpec, name: str, release: bool) -> None:
        """On the MDM pool: the certificate, the server with its connection, its first token."""
        title, label = "Add MDM server", spec.label()
        actor, ctx = Actor(body["user"]["id"]), svc.ctx
        try:
            pem = ctx.installer.fetch_certificate(spec, name)
        except MdmbotError as exc:
            failed = (
                f":warning: Couldn't fetch the certificate from {blocks.esc(label)}: "
                f"{blocks.esc(exc.message)} Nothing was added: correct the connection below "
                "and submit again (the API key is not kept)."
            )
            portal = ctx.settings.apple_portal
            update(body, modals.add_server_modal_again(body["view"], failed, portal))
            return
        if ctx.settings.apple_mode:
            try:
                loaded = load_certificate(pem, now=ctx.now())
            except MdmbotError as exc:
                update(body, modals.message_modal(title, f":warning: {blocks.esc(exc.message)}"))
                return
            link_in_apple(svc, actor.user_id, body["view"]["id"], name, release, loaded, spec)
            return
        try:
            loaded = load_certificate(pem, now=ctx.now())
            with ctx.unit_of_work() as session:
                issued = servers.add_server(
                    session, ctx.vault, actor, name=name, certificate=loaded,
                    release_devices=release, now=ctx.now(),
                )  # fmt: skip
                server = servers.find_server_by_id(session, issued.server_id)
                links.save_connection(session, ctx.vault, actor, server, spec, ctx.now())
        except MdmbotError as exc:
            text = f":warning: {blocks.esc(exc.message)} Nothing was added."
            update(body, modals.message_modal(title, text))
            return
        delivered(body, issued, title, links.plain_http(spec) or "")

    def update(body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            svc.gateway.update_view(body["view"]["id"], view)
        except MdmbotError:
            log.info("could not update the modal for %s", body["user"]["id"])

    @app.view(modals.REPLACE_CERT)
    def on_replace(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body):
            return
        try:
            loaded = load_certificate(certificate(view), now=svc.ctx.now())
            with svc.ctx.unit_of_work() as session:
                issued = servers.replace_certificate(
                    session,
                    svc.ctx.vault,
                    Actor(body["user"]["id"]),
                    target(session, view).name,
                    loaded,
                    svc.ctx.now(),
                    expected=expects(view),
                )
        except TokenConflict as exc:
            ack(
                response_action="update",
                view=modals.message_modal("Replace certificate", exc.message),
            )
            return
        except MdmbotError as exc:
            ack(response_action="errors", errors={"certificate": exc.message})
            return
        finish(ack, body, issued, "Replace certificate")

    @app.view(modals.CONFIRM_TOKEN)
    def on_token(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body):
            return
        try:
            with svc.ctx.unit_of_work() as session:
                issued = issuance.issue_token(
                    session,
                    svc.ctx.vault,
                    Actor(body["user"]["id"]),
                    target(session, view),
                    svc.ctx.now(),
                    expected=expects(view),
                )
        except MdmbotError as exc:
            ack(
                response_action="update",
                view=modals.message_modal("Renew server token", exc.message),
            )
            return
        finish(ack, body, issued, "Renew server token")

    @app.view(modals.CONFIRM_REMOVE)
    def on_remove(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body):
            return
        try:
            with svc.ctx.unit_of_work() as session:
                removed = unlink.remove_server(
                    session, Actor(body["user"]["id"]), target(session, view).name, svc.ctx.now(),
                    svc.ctx.settings.apple_portal,
                )  # fmt: skip
            text = f"Removed *{blocks.esc(removed.name)}*; its token is revoked."
        except MdmbotError as exc:
            text = exc.message
        ack(response_action="update", view=modals.message_modal("Remove MDM server", text))
        lifecycle.edit_stale(svc)
        svc.refresh_home(body["user"]["id"])

    @app.view(modals.EDIT_SERVER)
    def on_edit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body):
            return
        name = (modals.input_value(view, "name").get("value") or "").strip()
        release = bool(modals.input_value(view, "release").get("selected_options"))
        try:
            with svc.ctx.unit_of_work() as session:
                servers.edit_server(
                    session,
                    Actor(body["user"]["id"]),
                    target(session, view).name,
                    now=svc.ctx.now(),
                    rename=name,
                    release_devices=release,
                )
        except MdmbotError as exc:
            ack(response_action="errors", errors={"name": exc.message})
            return
        ack()
        svc.refresh_home(body["user"]["id"])
