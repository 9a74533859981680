"""Devices in Slack: `/mdm devices [SERVER]`, `/mdm devices import`, `/mdm assign SERVER`,
`/mdm defaults`, `/mdm release SERIAL…`, and their modal submissions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App

from bot.slack.builders import blocks, modals
from bot.slack.builders import device_blocks as ui
from bot.slack.services import BotServices, new_reference
from core.apple import devices as apple_devices
from core.apple import status as apple_status
from core.devices import csv_import as device_import
from core.devices import inventory as devices
from core.errors import InvalidInput, MdmbotError, PermissionDenied
from core.roles import Actor, Permission
from core.tokens import servers
from core.tokens.names import safe_filename

log = logging.getLogger("mdmbot.bot")

Handler = Callable[[dict[str, Any], str], dict[str, Any] | None]
MAX_RELEASE = 100
IMPORT_TIMEOUT = 30
APPLE_WAIT = 120.0
FROM_APPLE = (
    "In Apple mode devices come from {portal}: mdmbot reads them at every sync "
    "(`mdmbot apple sync` reads them now)."
)


def commands(
    svc: BotServices, open_modal: Callable[[dict[str, Any], dict[str, Any]], None]
) -> dict[str, Handler]:
    """The device subcommands of `/mdm`, for the command listener to dispatch."""

    def do_devices(body: dict[str, Any], arg: str) -> dict[str, Any] | None:
        user = body["user_id"]
        if arg.strip().lower() == "import":
            svc.authorize(user, Permission.MANAGE_DEVICES)
            if svc.ctx.settings.apple_mode:
                raise MdmbotError(FROM_APPLE.format(portal=svc.ctx.settings.apple_portal))
            open_modal(body, ui.import_modal())
            return None
        svc.authorize(user, Permission.VIEW)
        with svc.ctx.unit_of_work(readonly=True) as session:
            synced = apple_status.health(session) if svc.ctx.settings.apple_mode else None
            if not arg:
                listing, unassigned = devices.overview(session)
                shown: dict[str, Any] = {
                    "text": "Devices", "blocks": ui.overview_blocks(listing, unassigned)
                }
            else:
                name, families, first = devices.server_devices(session, arg, ui.FIRST_PAGE)
                shown = {
                    "text": f"Devices of {blocks.esc(name)}",
                    "blocks": ui.devices_blocks(name, families, first, sum(families.values())),
                }
        if synced is not None:
            when = blocks.local_time(synced.last_success_at) if synced.last_success_at else "never"
            shown["blocks"] = [*shown["blocks"], blocks.context(
                f"As {svc.ctx.settings.apple_portal} showed them at its last sync ({when}); "
                "mdmbot syncs at every sweep."
            )]  # fmt: skip
        return shown

    def do_assign(body: dict[str, Any], arg: str) -> None:
        svc.authorize(body["user_id"], Permission.MANAGE_DEVICES)
        if not arg:
            raise MdmbotError("Which server? Use `/mdm assign SERVER`.")
        open_modal(body, ui.assign_modal(svc.server_by_name(arg)))

    def do_defaults(body: dict[str, Any], arg: str) -> None:
        svc.authorize(body["user_id"], Permission.MANAGE_DEVICES)
        with svc.ctx.unit_of_work(readonly=True) as session:
            live = servers.list_servers(session)
            current = dict(devices.list_defaults(session))
        if not live:
            raise MdmbotError("Link an MDM server first with `/mdm add`.")
        open_modal(body, ui.defaults_modal(live, current))

    def do_release(body: dict[str, Any], arg: str) -> None:
        if svc.ctx.settings.apple_mode:
            raise MdmbotError(
                f"In Apple mode devices are released in {svc.ctx.settings.apple_portal} (its API "
                "cannot release them); the next sync shows them gone."
            )
        serials = devices.split_serials(arg)
        if len(serials) > MAX_RELEASE:
            raise MdmbotError(f"Release at most {MAX_RELEASE} devices at a time from Slack.")
        with svc.ctx.unit_of_work(readonly=True) as session:
            cleaned = devices.releasable(session, Actor(body["user_id"]), serials)
        open_modal(body, ui.release_modal(cleaned))

    return {
        "devices": do_devices,
        "assign": do_assign,
        "defaults": do_defaults,
        "release": do_release,
    }


SLOW = {"devices", "assign", "defaults", "release"}


def register(app: App, svc: BotServices) -> None:
    """Register the device modal submissions."""

    def allowed(ack: Ack, body: dict[str, Any], permission: Permission) -> bool:
        try:
            svc.authorize(body["user"]["id"], permission)
        except PermissionDenied as exc:
            ack(response_action="update", view=modals.message_modal("Not allowed", exc.message))
            return False
        return True

    def done(ack: Ack, title: str, text: str) -> None:
        ack(response_action="update", view=modals.message_modal(title, text))

    @app.action(ui.DEVICES_CSV)
    def on_csv(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        user = str(body["user"]["id"])
        try:
            svc.authorize(user, Permission.VIEW)
            with svc.ctx.unit_of_work(readonly=True) as session:
                name = servers.find_server(session, body["actions"][0].get("value") or "").name
                listed = devices.list_devices(session, server_name=name)
            svc.gateway.send_file(
                svc.gateway.open_dm(user),
                f"{safe_filename(name)}_devices.csv",
                ui.devices_csv(listed),
                f"The {len(listed)} devices of *{blocks.esc(name)}*, by serial number.",
            )
        except MdmbotError as exc:
            svc.try_dm(user, f":no_entry: {exc.message}")

    @app.view(ui.ASSIGN_DEVICES)
    def on_assign(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body, Permission.MANAGE_DEVICES):
            return
        text = modals.input_value(view, "serials").get("value") or ""
        user = body["user"]["id"]
        if svc.ctx.settings.apple_mode:
            server_id = svc.gateway.read_metadata(view).get("server_id")
            done(ack, "Assign devices", "Sent to Apple… the outcome will be here and in your DMs.")
            svc.background.submit(_through_apple, svc, user, body["view"]["id"], server_id, text)
            return
        try:
            with svc.ctx.unit_of_work() as session:
                server = servers.find_server_by_id(
                    session, svc.gateway.read_metadata(view).get("server_id")
                )
                result = devices.assign_devices(
                    session,
                    Actor(user),
                    server.name,
                    devices.split_serials(text),
                    svc.ctx.now(),
                    partial=True,
                )
        except InvalidInput as exc:
            ack(response_action="errors", errors={"serials": exc.message})
            return
        except MdmbotError as exc:
            done(ack, "Assign devices", exc.message)
            return
        moved = f"Assigned {len(result.assigned)} to {result.server}"
        if result.unchanged:
            moved += f" ({len(result.unchanged)} already there)"
        if result.refused:
            problems = []
            for label, serials in (
                ("not serial numbers", result.invalid),
                ("unknown", result.unknown),
                ("released", result.released),
            ):
                if serials:
                    problems.append(f"{label}: {', '.join(serials[:30])}")
            message = f"{moved}. Not assigned — {'; '.join(problems)}. Fix or remove them."
            ack(response_action="errors", errors={"serials": message[:1900]})
        else:
            done(ack, "Assign devices", f"{blocks.esc(moved)}.")
        svc.refresh_home(user)

    @app.view(ui.RELEASE_DEVICES)
    def on_release(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body, Permission.RELEASE_DEVICES):
            return
        try:
            serials = svc.gateway.read_metadata(view).get("serials") or []
            with svc.ctx.unit_of_work() as session:
                released = devices.release_devices(
                    session, Actor(body["user"]["id"]), [str(s) for s in serials], svc.ctx.now()
                )
            text = f"Released {len(released)} device(s): {', '.join(released)}."
        except MdmbotError as exc:
            text = exc.message
        done(ack, "Release devices", blocks.esc(text))
        svc.refresh_home(body["user"]["id"])

    @app.view(ui.DEVICE_DEFAULTS)
    def on_defaults(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body, Permission.MANAGE_DEVICES):
            return
        actor, now, lines = Actor(body["user"]["id"]), svc.ctx.now(), []
        try:
            with svc.ctx.unit_of_work() as session:
                current = dict(devices.list_defaults(session))
                for family in devices.FAMILIES:
                    state = modals.input_value(view, f"family:{family}")
                    chosen = (state.get("selected_option") or {}).get("value", ui.NO_DEFAULT)
                    if chosen == ui.NO_DEFAULT:
                        if current.get(family):
                            devices.set_default(session, actor, family, None, now)
                        lines.append(f"{family}: no default")
                        continue
                    server = servers.find_server_by_id(session, chosen)
                    if current.get(family) != server.name:
                        devices.set_default(session, actor, family, server.name, now)
                    lines.append(f"{family}: {blocks.esc(server.name)}")
        except MdmbotError as exc:
            done(ack, "Default assignment", exc.message)
            return
        done(ack, "Default assignment", "Saved.\n" + "\n".join(lines))

    @app.view(ui.IMPORT_DEVICES)
    def on_import(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        if not allowed(ack, body, Permission.MANAGE_DEVICES):
            return
        files = modals.input_value(view, "file").get("files") or []
        if len(files) != 1:
            ack(response_action="errors", errors={"file": "Attach one CSV file."})
            return
        done(ack, "Import devices", "Importing… the summary will be here and in your DMs.")
        svc.background.submit(_import, svc, body["user"]["id"], body["view"]["id"], files[0])


def _through_apple(
    svc: BotServices, user: str, view_id: str, server_id: object, text: str
) -> None:
    """Apple mode: post the assignment to Apple and wait for its activity, after the ack."""
    try:
        with svc.ctx.unit_of_work(readonly=True) as session:
            name = servers.find_server_by_id(session, server_id).name
        result = apple_devices.assign(
            svc.ctx.apple, svc.ctx.unit_of_work, Actor(user), name,
            devices.split_serials(text), wait=APPLE_WAIT, now=svc.ctx.now,
        )  # fmt: skip
        icon = {"completed": ":white_check_mark:", "failed": ":x:"}.get(result.state, ":hourglass:")
        message = f"{icon} {blocks.esc(result.sentence())}"
    except MdmbotError as exc:
        message = f":warning: {blocks.esc(exc.message)}"
    except Exception:
        reference = new_reference()
        log.exception("Apple assignment failed ref=%s", reference)
        message = f":warning: The assignment could not be sent to Apple. Reference: `{reference}`."
    _report(svc, user, view_id, "Assign devices", message)


def _report(svc: BotServices, user: str, view_id: str, title: str, text: str) -> None:
    """What background work found: in its modal, in the person's DM, on their Home."""
    try:
        svc.gateway.update_view(view_id, modals.message_modal(title, text))
    except MdmbotError:
        log.info("could not update the %s modal for %s", title, user)
    svc.try_dm(user, text)
    svc.refresh_home(user)


def _import(svc: BotServices, user: str, view_id: str, file: dict[str, Any]) -> None:
    """Download and import the CSV after the ack (a large file takes longer than 3 seconds)."""
    try:
        content = svc.gateway.download_file(
            file,
            limit=device_import.MAX_BYTES,
            too_large=f"The file is larger than {device_import.MAX_BYTES // 2**20} MB.",
            deadline=IMPORT_TIMEOUT,
        )
        with svc.ctx.unit_of_work() as session:
            summary = device_import.import_devices(
                session, Actor(user), content, svc.ctx.now(), source=str(file.get("name", "CSV"))
            )
        text = ui.import_summary(
            summary.created, summary.updated, summary.unchanged, summary.to_default
        )
        if summary.released:
            text += f"\nSkipped {summary.released} released device(s): they left the organisation."
    except MdmbotError as exc:
        text = f":warning: {blocks.esc(exc.message)}"
    except Exception:
        reference = new_reference()
        log.exception("device import failed ref=%s", reference)
        text = f":warning: The import failed and nothing was imported. Reference: `{reference}`."
    _report(svc, user, view_id, "Import devices", text)
