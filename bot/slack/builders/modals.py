"""Pure builders of the modals (Slack: title, submit and close are at most 24 characters)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.slack.builders import phrases
from bot.slack.builders.blocks import Block, days_until, esc, local_date, plain, plural, section
from core.connections.links import MAX_AUTO_RENEW_DAYS
from core.connections.server_state import State, state_of
from core.settings import SCHOOL_PORTAL
from core.tokens.servers import ServerView

ADD_SERVER = "add_server"
REPLACE_CERT = "replace_cert"
CONFIRM_TOKEN = "confirm_token"  # noqa: S105 (a callback id, not a secret)
CONFIRM_REMOVE = "confirm_remove"
EDIT_SERVER = "edit_server"
RELEASE_LABEL = "Allow this MDM server to release devices"
RELEASE_HELP = "Releasing removes a device from {portal} for good (e.g. when sold)."
CERT_FILETYPES = ["pem", "der", "cer", "crt"]
MDM_KINDS = {"nanodep": "NanoDEP", "fleet": "Fleet"}  # `command` runs a program: the CLI only
MDM_KIND, MDM_URL, MDM_DEP_NAME, MDM_API_KEY = "mdm_kind", "mdm_url", "mdm_dep_name", "mdm_api_key"
AUTO_RENEW = "auto_renew"


def _modal(
    callback_id: str,
    title: str,
    blocks: list[Block],
    *,
    submit: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title, 24),
        "close": plain("Cancel", 24),
        "blocks": blocks,
    }
    if submit:
        view["submit"] = plain(submit, 24)
    if metadata is not None:
        view["private_metadata"] = json.dumps(metadata, separators=(",", ":"))
    return view


def _name_input(initial: str | None = None) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": "value",
        "max_length": 64,
        "placeholder": plain("e.g. Jamf Pro – District"),
    }
    if initial:
        element["initial_value"] = initial
    return {
        "type": "input",
        "block_id": "name",
        "label": plain("MDM server name"),
        "hint": plain("Unique; not “Unassigned” or “Reassigned”.", 150),
        "element": element,
    }


def _release_input(checked: bool, portal: str) -> Block:
    option = {
        "text": plain(RELEASE_LABEL),
        "description": plain(RELEASE_HELP.format(portal=portal), 150),
        "value": "release",
    }
    element: Block = {"type": "checkboxes", "action_id": "value", "options": [option]}
    if checked:
        element["initial_options"] = [option]
    return {
        "type": "input",
        "block_id": "release",
        "optional": True,
        "label": plain("Device release"),
        "element": element,
    }


def _certificate_input(hint: str = "", *, optional: bool = False) -> Block:
    return {
        "type": "input",
        "block_id": "certificate",
        "optional": optional,
        "label": plain("Public key certificate"),
        "hint": plain(
            "The .pem, .der, .cer or .crt file your MDM server gives you."
            + hint,
            150,
        ),
        "element": {
            "type": "file_input",
            "action_id": "value",
            "filetypes": CERT_FILETYPES,
            "max_files": 1,
        },
    }


def _text_input(block_id: str, label: str, hint: str, placeholder: str) -> Block:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": plain(label),
        "hint": plain(hint, 150),
        "element": {
            "type": "plain_text_input",
            "action_id": "value",
            "max_length": 3000,
            "placeholder": plain(placeholder, 150),
        },
    }


def _connection_inputs() -> list[Block]:
    kinds = [{"text": plain(label), "value": kind} for kind, label in MDM_KINDS.items()]
    return [
        {"type": "divider"},
        section(
            "*Or let mdmbot install the token* — leave the certificate empty: mdmbot fetches it "
            "from NanoDEP or Fleet, installs this token and every renewal there, and watches "
            "them being used."
        ),
        {
            "type": "input",
            "block_id": MDM_KIND,
            "optional": True,
            "label": plain("MDM server software"),
            "element": {
                "type": "static_select",
                "action_id": "value",
                "placeholder": plain("Not connected (upload the certificate)"),
                "options": kinds,
            },
        },
        _text_input(
            MDM_URL, "MDM server URL", "Its API's address.", "https://nanodep.school.example"
        ),
        _text_input(
            MDM_DEP_NAME,
            "DEP name (NanoDEP)",
            "The DEP name this server has in NanoDEP; the server name when left empty.",
            "e.g. school1",
        ),
        _text_input(
            MDM_API_KEY,
            "API key",
            "NanoDEP's API key or a Fleet API token; stored encrypted and never shown again.",
            "API key",
        ),
        {
            "type": "input",
            "block_id": AUTO_RENEW,
            "optional": True,
            "label": plain("Renew automatically (days before expiry)"),
            "hint": plain("Empty: the team is alerted before expiry and renews by hand.", 150),
            "element": {
                "type": "number_input",
                "action_id": "value",
                "is_decimal_allowed": False,
                "min_value": "1",
                "max_value": str(MAX_AUTO_RENEW_DAYS),
            },
        },
    ]


def add_server_modal(portal: str = SCHOOL_PORTAL) -> dict[str, Any]:
    """`/mdm add`: name, release-devices (checked by default), certificate or MDM connection;
    `portal` names Apple's portal of the mode."""
    return _modal(
        ADD_SERVER,
        "Add MDM server",
        [
            section(
                "Link a third-party MDM server. mdmbot will DM you its server token, or install "
                "it into the MDM server for you."
            ),
            _name_input(),
            _release_input(True, portal),
            _certificate_input(" Not needed with a connection below.", optional=True),
            *_connection_inputs(),
        ],
        submit="Add and get token",
    )


def add_server_modal_again(
    submitted: dict[str, Any], notice: str, portal: str = SCHOOL_PORTAL
) -> dict[str, Any]:
    """The add modal again with what was typed (never the API key) and why it came back."""
    values = submitted.get("state", {}).get("values", {})
    view = add_server_modal(portal)
    filled: list[Block] = [section(notice)]
    for block in view["blocks"]:
        state = (values.get(block.get("block_id")) or {}).get("value") or {}
        if block.get("type") == "input" and block["block_id"] != MDM_API_KEY:
            block = {**block, "element": _refilled(block["element"], state)}
        filled.append(block)
    return {**view, "blocks": filled}


def _refilled(element: Block, state: dict[str, Any]) -> Block:
    """An input element starting from the value it was submitted with."""
    element = {k: v for k, v in element.items() if not k.startswith("initial_")}
    kind = element["type"]
    if kind in ("plain_text_input", "number_input") and state.get("value"):
        element["initial_value"] = str(state["value"])
    elif kind == "static_select" and state.get("selected_option"):
        element["initial_option"] = state["selected_option"]
    elif kind == "checkboxes" and state.get("selected_options"):
        element["initial_options"] = state["selected_options"]
    return element


def replace_cert_modal(view: ServerView, origin: dict[str, str] | None = None) -> dict[str, Any]:
    """`/mdm cert NAME`: upload a new public key; a new token replaces the old one."""
    return _modal(
        REPLACE_CERT,
        "Replace certificate",
        [
            section(
                f"Upload the new public key certificate for *{esc(view.name)}*. mdmbot renews "
                "its token with it; the current token stops working as soon as the new one is "
                "active."
            ),
            _certificate_input(),
        ],
        submit="Replace and renew",
        metadata={"server_id": view.id, "expects": view.token_id, **(origin or {})},
    )


def renew_state(view: ServerView, now: datetime, *, rotation: bool = False) -> str:
    """The server's state as every surface says it, then what renewing changes now."""
    st = state_of(view, now)
    lead = phrases.problem(view.name, st)
    expires = view.token_expires_at
    if expires is None:
        return f"{lead} This issues its first token, replacing nothing."
    if st.state is State.EXPIRED:
        return f"{lead} The renewed token starts enrolment through it again."
    days = plural(days_until(expires, now), "day")
    left = f"The current token expires {local_date(expires)} (in {days})"
    if rotation:
        need = "renewing is needed because whoever downloaded it left or changed their password."
    elif st.state is State.EXPIRES_SOON:
        need = "it is time to renew it."
    else:
        need = "renewing isn't needed yet; mdmbot reminds the team before it expires."
    if view.mdm_label:
        carry = (
            f"mdmbot installs the new one into {esc(view.mdm_label)} straight away (if that "
            "fails, it DMs you the file and says what is left to do)."
        )
    else:
        carry = (
            "upload the new file (sent to you by DM) to the MDM server straight away, or "
            "device enrolment for this server stops."
        )
    return (
        f"{lead}\n\n{left}: {need}\n\n:warning: The current token stops working as soon as the "
        f"new one is active: {carry}"
    )


def confirm_token_modal(
    view: ServerView, origin: dict[str, str] | None = None, *, now: datetime
) -> dict[str, Any]:
    """Confirm renewing a token: when the current one expires, and what stops."""
    rotation = (origin or {}).get("origin") == "rotation"
    verb = "Get" if view.token_id is None else "Renew"  # a server without a token has none to renew
    return _modal(
        CONFIRM_TOKEN,
        f"{verb} server token",
        [
            section(
                f"{verb} the server token for *{esc(view.name)}*?\n\n"
                + renew_state(view, now, rotation=rotation)
            )
        ],
        submit=f"{verb} token",
        metadata={"server_id": view.id, "expects": view.token_id, **(origin or {})},
    )


UPDATE_KEY = "update_api_key_submit"


def api_key_modal(view: ServerView) -> dict[str, Any]:
    """"Update API key": the key the MDM server refused, replaced and kept in the vault."""
    where = esc(view.mdm_label or "its MDM server")
    return _modal(
        UPDATE_KEY,
        "Update API key",
        [
            section(
                f"{where} refused mdmbot's API key for *{esc(view.name)}*, so retrying cannot "
                "help. Paste the key it accepts now: mdmbot stores it encrypted, never shows it "
                "again, and installs the token straight away."
            ),
            _text_input(MDM_API_KEY, "API key", "NanoDEP's API key or a Fleet API token.", "key"),
        ],
        submit="Save and install",
        metadata={"server_id": view.id},
    )


def confirm_remove_modal(view: ServerView) -> dict[str, Any]:
    """Confirm removing a server: its token is revoked."""
    return _modal(
        CONFIRM_REMOVE,
        "Remove MDM server",
        [
            section(
                f"Remove *{esc(view.name)}* from mdmbot?\n\n:warning: Its server token is revoked "
                "and no more alerts are sent for it. mdmbot moves its devices to the default "
                "server for their kind (`/mdm defaults`); any kind without one is left "
                "unassigned until you `/mdm assign` it."
            )
        ],
        submit="Remove server",
        metadata={"server_id": view.id},
    )


def edit_server_modal(view: ServerView, portal: str = SCHOOL_PORTAL) -> dict[str, Any]:
    """Rename a server or change whether it may release devices (from Apple's `portal`)."""
    return _modal(
        EDIT_SERVER,
        "Edit MDM server",
        [_name_input(view.name), _release_input(view.release_devices, portal)],
        submit="Save",
        metadata={"server_id": view.id},
    )


APPLE_TOKEN = "apple_token_upload_submit"  # noqa: S105 (a callback id)
APPLE_FILE = "token_file"


def apple_token_modal(view: ServerView | None, portal: str) -> dict[str, Any]:
    """Upload a server token downloaded from Apple's `portal` (Apple mode): for `view`, or
    for whichever server's certificate it is encrypted to."""
    which = f"*{esc(view.name)}*" if view else "the server whose certificate it is encrypted to"
    return _modal(
        APPLE_TOKEN,
        "Token from Apple",
        [
            section(
                f"In {portal}, open the MDM server's page and choose *Download "
                f"Token*; upload the .p7m file here. mdmbot takes it in for {which}, installs "
                "it into the MDM server when connected, and watches its expiry."
            ),
            {
                "type": "input",
                "block_id": APPLE_FILE,
                "label": plain("Server token (.p7m)"),
                "element": {
                    "type": "file_input",
                    "action_id": "value",
                    "filetypes": ["p7m"],
                    "max_files": 1,
                },
            },
        ],
        submit="Take in token",
        metadata={"server_id": view.id if view else None},
    )


def message_modal(title: str, text: str) -> dict[str, Any]:
    """A modal that only tells something."""
    return {
        "type": "modal",
        "title": plain(title, 24),
        "close": plain("Close", 24),
        "blocks": [section(text)],
    }


def input_value(view: dict[str, Any], block_id: str) -> Any:
    """The submitted state of one input block."""
    return view.get("state", {}).get("values", {}).get(block_id, {}).get("value", {})
