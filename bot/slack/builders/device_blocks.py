"""Pure Block Kit builders for devices: listings, and the assign, import, defaults and release
modals (Slack: title, submit and close at most 24 characters; private_metadata at most 3000)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

from bot.slack.builders.blocks import (
    MAX_SECTION_TEXT,
    Block,
    button,
    context,
    esc,
    plain,
    section,
)
from bot.slack.builders.modals import _modal
from core.devices.inventory import FAMILIES, DeviceView
from core.tokens.servers import ServerView

ASSIGN_DEVICES = "assign_devices"
IMPORT_DEVICES = "import_devices"
DEVICE_DEFAULTS = "device_defaults"
RELEASE_DEVICES = "release_devices"
FIRST_PAGE = 20
MAX_METADATA = 3000
NO_DEFAULT = "none"
DEVICES_CSV = "devices_csv"
CSV_COLUMNS: tuple[str, ...] = ("serial_number", "model", "description", "color", "asset_tag")
CSV_COLUMNS += ("device_family", "os", "order_number", "server", "profile_status")


def _counts(families: Counter[str]) -> str:
    total = sum(families.values())
    parts = [f"{families[f]} {f}" for f in FAMILIES if families[f]]
    return f"{total} device{'s' if total != 1 else ''}" + (
        f" ({', '.join(parts)})" if parts else ""
    )


def device_line(device: DeviceView) -> str:
    """One device on one line."""
    tag = f" · tag {esc(device.asset_tag)}" if device.asset_tag else ""
    return f"`{device.serial_number}` {esc(device.model)} · {device.device_family}{tag}"


def devices_blocks(
    title: str, families: Counter[str], first: list[DeviceView], total: int
) -> list[Block]:
    """`/mdm devices [SERVER]`: counts by family, then the first page of devices."""
    blocks = [section(f"*{esc(title)}* — {_counts(families)}")]
    if first:
        lines = "\n".join(device_line(d) for d in first)
        blocks.append(section(lines[:MAX_SECTION_TEXT]))
    if total > len(first):
        blocks += [
            context(f"First {len(first)} of {total} by serial."),
            {
                "type": "actions",
                "elements": [button(f"Send me all {total} as a CSV file", DEVICES_CSV, title)],
            },
        ]
    return blocks


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text (OWASP CSV injection: no leading = + - @)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def devices_csv(devices: list[DeviceView]) -> bytes:
    """Devices as a CSV file, one row each."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for device in devices:
        writer.writerow([_cell(getattr(device, column)) for column in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def overview_blocks(
    servers: list[tuple[str, Counter[str]]], unassigned: Counter[str]
) -> list[Block]:
    """`/mdm devices`: each server's devices by family, and the unassigned ones."""
    lines = [f"*{esc(name)}* — {_counts(families)}" for name, families in servers]
    lines.append(f"*Unassigned* — {_counts(unassigned)}")
    return [
        section("\n".join(lines)[:MAX_SECTION_TEXT]),
        context("`/mdm devices SERVER` lists a server's devices; `/mdm assign SERVER` adds some."),
    ]


def assign_modal(server: ServerView) -> dict[str, Any]:
    """`/mdm assign SERVER`: a text area for serials pasted from a spreadsheet."""
    return _modal(
        ASSIGN_DEVICES,
        "Assign devices",
        [
            section(
                f"Assign devices to *{esc(server.name)}*. Reassigned devices leave their "
                "current server."
            ),
            {
                "type": "input",
                "block_id": "serials",
                "label": plain("Serial numbers"),
                "hint": plain(
                    "Paste a column from a spreadsheet: one per line, or separated "
                    "by commas or spaces.",
                    150,
                ),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
        submit="Assign",
        metadata={"server_id": server.id},
    )


def import_modal() -> dict[str, Any]:
    """`/mdm devices import`: one CSV file."""
    return _modal(
        IMPORT_DEVICES,
        "Import devices",
        [
            section(
                "Upload a CSV with a header row: `serial_number, model, description, color, "
                "device_family, os` and optionally `asset_tag, order_number`. Re-importing "
                "updates devices; a file with a bad row imports nothing."
            ),
            {
                "type": "input",
                "block_id": "file",
                "label": plain("CSV file"),
                "element": {
                    "type": "file_input",
                    "action_id": "value",
                    "filetypes": ["csv", "txt"],
                    "max_files": 1,
                },
            },
        ],
        submit="Import",
    )


def _option(name: str, value: str) -> dict[str, Any]:
    return {"text": plain(name), "value": value}


def defaults_modal(servers: list[ServerView], current: dict[str, str | None]) -> dict[str, Any]:
    """`/mdm defaults`: the default server of each device family (Default Device Assignment)."""
    options = [_option("No default", NO_DEFAULT)] + [
        _option(s.name, str(s.id)) for s in servers[:99]
    ]
    by_name = {s.name: str(s.id) for s in servers}
    blocks: list[Block] = [
        section("New devices of a family go to its default server when they are imported.")
    ]
    for family in FAMILIES:
        chosen = current.get(family)
        initial = _option(chosen, by_name[chosen]) if chosen in by_name else options[0]
        blocks.append(
            {
                "type": "input",
                "block_id": f"family:{family}",
                "label": plain(family),
                "element": {
                    "type": "static_select",
                    "action_id": "value",
                    "options": options,
                    "initial_option": initial if chosen else options[0],
                },
            }
        )
    return _modal(DEVICE_DEFAULTS, "Default assignment", blocks, submit="Save")


def release_modal(serials: list[str]) -> dict[str, Any]:
    """`/mdm release SERIAL…`: confirm first, a released device leaves the organisation."""
    shown = ", ".join(f"`{s}`" for s in serials)
    return _modal(
        RELEASE_DEVICES,
        "Release devices",
        [
            section(
                f"Release {len(serials)} device{'s' if len(serials) != 1 else ''} from the "
                f"organisation?\n{shown}"[:MAX_SECTION_TEXT]
            ),
            section(
                ":warning: A released device leaves Apple School Manager and every MDM server. "
                "This cannot be undone here."
            ),
        ],
        submit="Release",
        metadata={"serials": serials},
    )


def import_summary(created: int, updated: int, unchanged: int, to_default: Counter[str]) -> str:
    """What an import did, in a sentence or two."""
    text = (
        f"Imported {created + updated + unchanged} devices: {created} new, {updated} updated, "
        f"{unchanged} unchanged."
    )
    for name, count in sorted(to_default.items()):
        text += f"\n{count} went to *{esc(name)}* (their family's default)."
    return text
