"""A NanoDEP-like client of the device endpoints, for tests: JSON requests with the session
header, a new session once on 401 (as NanoDEP and Fleet do), and NanoDEP's fetch-then-sync loop:
fetch pages until `more_to_follow` is false; on the next run fetch again with the stored cursor,
take `EXHAUSTED_CURSOR` as the signal to sync from it; drop an invalid or expired cursor."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tests.dep_client import NANODEP_UA, Creds, session_key

JSON_TYPE = "application/json;charset=UTF8"


@dataclass
class NanoDep:
    """One MDM server's client, and the device list it keeps."""

    base: str
    creds: Creds
    timestamp: str | None = None
    key: str | None = None
    cursor: str | None = None
    syncing: bool = False
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """Send one request; a 401 opens a new session and retries once with the same body."""
        for attempt in (1, 2):
            if self.key is None:
                self.key = session_key(self.base, self.creds, timestamp=self.timestamp)
            status, text = self._send(method, path, body)
            if status == 401 and attempt == 1:
                self.key = None
                continue
            try:
                return status, json.loads(text)
            except ValueError:
                return status, text
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: object) -> tuple[int, str]:
        return self._raw(method, path, None if body is None else json.dumps(body).encode())

    def _raw(self, method: str, path: str, data: bytes | None) -> tuple[int, str]:
        """One request with these bytes as its body, and the current session."""
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Content-Type": JSON_TYPE,
                "Accept": JSON_TYPE,
                "User-Agent": NANODEP_UA,
                "X-Server-Protocol-Version": "7",
                "X-ADM-Auth-Session": self.key or "",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def step(self, limit: int) -> bool:
        """One call of NanoDEP's loop; True while more is waiting."""
        if not self.syncing:
            body: dict[str, Any] = {"limit": limit}
            if self.cursor:
                body["cursor"] = self.cursor
            status, answer = self.request("POST", "/server/devices", body)
            if status == 400 and "EXHAUSTED_CURSOR" in answer:
                self.log.append("exhausted")
                self.syncing = True
                return True
            assert status == 200, answer
            self.devices.update((d["serial_number"], d) for d in answer["devices"])
            self.cursor = answer["cursor"]
            self.log.append(f"fetch {len(answer['devices'])}")
            return True  # a finished fetch is followed by a fetch with its cursor: EXHAUSTED
        body = {"cursor": self.cursor, "limit": limit}
        status, answer = self.request("POST", "/devices/sync", body)
        if status == 400 and ("INVALID_CURSOR" in answer or "EXPIRED_CURSOR" in answer):
            self.log.append(answer)
            self.cursor, self.syncing = None, False
            return True
        assert status == 200, answer
        for device in answer["devices"]:
            if device["op_type"] == "deleted":
                self.devices.pop(device["serial_number"], None)
            else:
                self.devices[device["serial_number"]] = device
        self.cursor = answer["cursor"]
        self.log.append(f"sync {len(answer['devices'])}")
        return bool(answer["more_to_follow"])

    def drain(self, limit: int) -> None:
        """Call until a sync has nothing more waiting."""
        for _ in range(10_000):
            was_syncing = self.syncing
            if not self.step(limit) and was_syncing:
                return
        raise AssertionError("the walk did not end")
