"""`/mdm add` in Apple mode, after the ack: Apple Business creates the server through its API;
for Apple School Manager the person gets the certificate and the portal's steps (no API adds a
server there) and the next sync links it by name."""

from __future__ import annotations

import logging

from sqlmodel import Session

from bot.slack.builders import blocks, modals
from bot.slack.services import BotServices, new_reference
from core.apple import linking
from core.connections import links
from core.connections.links import ConnectionSpec
from core.errors import MdmbotError
from core.models import Server
from core.roles import Actor
from core.tokens.certificates import LoadedCertificate
from core.tokens.names import safe_filename

log = logging.getLogger("mdmbot.bot")
TITLE = "Add MDM server"


def link_in_apple(
    svc: BotServices,
    user: str,
    view_id: str,
    name: str,
    release: bool,
    loaded: LoadedCertificate,
    spec: ConnectionSpec | None = None,
) -> None:
    """Link the server with Apple; say what happened and what to do next (modal and DM)."""
    ctx, actor = svc.ctx, Actor(user)

    def connect(session: Session, server: Server) -> None:
        if spec is not None:
            links.save_connection(session, ctx.vault, actor, server, spec, ctx.now())

    business = ctx.settings.mdmbot_apple_api == "business"
    try:
        linked = linking.link_server(
            ctx.apple if business else None, ctx.unit_of_work, actor, name=name,
            certificate=loaded, release_devices=release, now=ctx.now(), connect=connect,
        )  # fmt: skip
    except MdmbotError as exc:
        _say(svc, user, view_id, f":warning: {blocks.esc(exc.message)} Nothing was added.")
        return
    except Exception:
        reference = new_reference()
        log.exception("linking with Apple failed ref=%s", reference)
        _say(svc, user, view_id, f":warning: Nothing was added. Reference: `{reference}`.")
        return
    shown, portal = blocks.esc(linked.name), ctx.settings.apple_portal
    if linked.apple_id:
        text = f":white_check_mark: Created *{shown}* in {portal} and linked it."
    else:
        file_name = f"{safe_filename(linked.name)}_certificate.pem"
        steps = linking.school_steps(linked.name, release, file_name)
        text = (
            f"Saved *{shown}*. Apple School Manager has no API to add it, so add it there "
            f"(the certificate {file_name} is in your DMs):\n"
            + "\n".join(f"{n}. {blocks.esc(step)}" for n, step in enumerate(steps, 1))
        )
        comment = f"The public key certificate of *{shown}*, for {portal}."
        try:
            dm = svc.gateway.open_dm(user)
            svc.gateway.send_file(dm, file_name, linked.certificate_pem.encode(), comment)
        except MdmbotError:
            text += "\n:warning: Slack did not take the certificate file: upload your MDM's own."
    _say(svc, user, view_id, f"{text}\n{blocks.esc(linking.next_step(linked.name, portal))}")


def _say(svc: BotServices, user: str, view_id: str, text: str) -> None:
    try:
        svc.gateway.update_view(view_id, modals.message_modal(TITLE, text))
    except MdmbotError:
        log.info("could not update the add modal for %s", user)
    svc.try_dm(user, text)
    svc.refresh_home(user)
