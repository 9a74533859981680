"""Shared by the device tests: CSV files, servers, and a DEP client that walks fetch then sync."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from core.db import unit_of_work
from core.dep import devices as dep_devices
from core.dep.auth import DepError
from core.roles import Actor
from core.tokens import servers
from core.vault import Vault
from tests.integration import rsa_cert

OPERATOR = Actor("alice", operator=True)
HEADER = "serial_number,model,description,color,device_family,os,asset_tag,order_number"
KEY = b"k" * 32


def serial(index: int, prefix: str = "C02") -> str:
    """A valid serial number, distinct for each index."""
    return f"{prefix}{index:09d}"


def csv_of(
    serials: list[str], family: str = "iPad", os: str = "iPadOS", model: str = "iPad Air"
) -> bytes:
    """A device CSV with one row per serial."""
    rows = [HEADER] + [
        f"{s},{model},{model} 11-inch,Space Gray,{family},{os},A{s[-4:]},PO-1" for s in serials
    ]
    return ("\n".join(rows) + "\n").encode()


def add_server(
    session: Session, vault: Vault, name: str, now: datetime, *, release: bool = True
) -> int:
    """Link a server and return its id."""
    issued = servers.add_server(
        session,
        vault,
        OPERATOR,
        name=name,
        certificate=rsa_cert().pem,
        release_devices=release,
        now=now,
    )
    return issued.server_id


Call = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class WalkingClient:
    """An MDM server's view, kept as NanoDEP keeps it: fetch until done, then sync for ever."""

    call: Call
    cursor: str | None = None
    fetching: bool = True
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def step(self, limit: int) -> bool:
        """One call; True while more is waiting."""
        if self.fetching:
            body: dict[str, Any] = {"limit": limit}
            if self.cursor:
                body["cursor"] = self.cursor
            try:
                page = self.call("fetch", body)
            except DepError as exc:
                assert exc.code == "EXHAUSTED_CURSOR", exc.code
                self.fetching = False
                return True
            for device in page["devices"]:
                self.devices[device["serial_number"]] = device
            self.cursor = page["cursor"]
            if not page["more_to_follow"]:
                self.fetching = False
            return bool(page["more_to_follow"])
        page = self.call("sync", {"cursor": self.cursor, "limit": limit})
        for device in page["devices"]:
            if device["op_type"] == "deleted":
                self.devices.pop(device["serial_number"], None)
            else:
                self.devices[device["serial_number"]] = device
        self.cursor = page["cursor"]
        return bool(page["more_to_follow"])

    def drain(self, limit: int) -> None:
        """Call until nothing more is waiting (a fetch first finishes, then one sync round)."""
        while self.fetching:
            self.step(limit)
        while self.step(limit):
            pass


def core_caller(engine: sa.Engine, server_id: int, clock: Callable[[], datetime]) -> Call:
    """A client's calls answered by the core use cases, each in its own unit of work."""

    def call(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        use_case = dep_devices.fetch_devices if kind == "fetch" else dep_devices.sync_devices
        with unit_of_work(engine) as session:
            return use_case(session, KEY, server_id, body, clock())

    return call
