"""What Apple mode needs from Apple's School Manager / Business API (ASM-API.md §3 to §5): the
documents' facts as plain values, the errors a user reads, and the client's narrow interface
(`bot/apple` implements it; core never imports it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.errors import MdmbotError

# Failure kinds: one alert each, once, while Apple keeps failing that way.
UNREACHABLE = "unreachable"
REFUSED = "refused"
MALFORMED = "malformed"
REJECTED = "rejected"


class AppleError(MdmbotError):
    """Apple did not do what was asked; `kind` says which way (one alert per kind)."""

    kind = UNREACHABLE


class AppleUnreachable(AppleError):
    """Apple's API could not be reached, timed out or kept failing (5xx, 429)."""

    kind = UNREACHABLE


class AppleRefused(AppleError):
    """Apple refused the API account: revoked, wrong key, wrong client id or scope."""

    kind = REFUSED


class AppleMalformed(AppleError):
    """Apple answered something that is not the document its API describes."""

    kind = MALFORMED


class AppleRejected(AppleError):
    """Apple refused one request (an unknown serial or server, a write School does not allow)."""

    kind = REJECTED


@dataclass(frozen=True)
class AppleServer:
    """One of Apple's `mdmServers`."""

    id: str
    name: str
    last_connected_at: datetime | None = None
    release_devices: bool | None = None


@dataclass(frozen=True)
class AppleDevice:
    """One of Apple's `orgDevices`, with the id of the server it is assigned to (None: none)."""

    serial: str
    family: str
    model: str = ""
    color: str = ""
    order_number: str | None = None
    server_id: str | None = None


@dataclass(frozen=True)
class AppleInventory:
    """Everything one sync reads: every server and every device, read to the last page."""

    servers: list[AppleServer]
    devices: list[AppleDevice] = field(default_factory=list)


@dataclass(frozen=True)
class Activity:
    """An `orgDeviceActivities` resource: `status` IN_PROGRESS, COMPLETED, STOPPED or FAILED."""

    id: str
    status: str
    sub_status: str = ""

    @property
    def succeeded(self) -> bool:
        """Completed without failures (ASM-API.md §5.2: COMPLETED_WITH_SUCCESS)."""
        return self.status == "COMPLETED" and self.sub_status in ("", "COMPLETED_WITH_SUCCESS")

    @property
    def finished(self) -> bool:
        """Apple is done with it, one way or the other."""
        return self.status != "IN_PROGRESS"


class AppleApi(Protocol):
    """The client of Apple's API that Apple mode's use cases are given."""

    portal: str  # Apple's portal for this API, by name (Apple Business or Apple School Manager)

    def inventory(self) -> AppleInventory:
        """Every MDM server and every device with its assignment (all pages, or an error)."""
        ...

    def start_activity(self, kind: str, server_id: str, serials: Sequence[str]) -> Activity:
        """POST an `orgDeviceActivities` (ASSIGN_DEVICES or UNASSIGN_DEVICES)."""
        ...

    def activity(self, activity_id: str) -> Activity:
        """GET one activity's state."""
        ...

    def create_server(self, name: str, certificate_der: bytes, file_name: str,
                      release_devices: bool) -> AppleServer:  # fmt: skip
        """POST /v1/mdmServers (Apple Business only); the created server."""
        ...
