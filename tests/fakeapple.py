"""A fake Apple School Manager API for faults (ASM-API.md §2 to §5): it checks the client assertion
with the account's public key, pages its lists, and answers what a test queued first (a status
with headers, a cut body, expired access tokens, a revoked account)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CLIENT_ID = "SCHOOLAPI.9703f56c-10ce-4876-8f59-e78e5e23a152"
KEY_ID = "d136aa66-0c3b-4bd4-9892-c20e8db024ab"


@dataclass
class Fault:
    """What to answer instead, once, to the next request whose path starts with `prefix`."""

    prefix: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False  # promise a longer body than sent, then close
    expire_tokens: bool = False  # forget every access token first (the request gets 401)


@dataclass
class FakeApple:
    """State and faults; `start()` serves it on 127.0.0.1 and an ephemeral port."""

    page_size: int = 2
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    revoked: bool = False
    polls_to_complete: int = 1
    fail_activities: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.lock = threading.Lock()
        self.url = ""

    @property
    def key_pem(self) -> bytes:
        """The API account's private key, as Apple School Manager downloads it."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write_key(self, directory: Path) -> Path:
        """The private key in a file (MDMBOT_APPLE_KEY_FILE)."""
        path = directory / "apple-api-key.pem"
        path.write_bytes(self.key_pem)
        return path

    @property
    def token_url(self) -> str:
        """The token endpoint, also the assertion's audience."""
        return f"{self.url}/auth/oauth2/v2/token"

    def settings(self, key_file: Path) -> dict[str, Any]:
        """The Apple mode settings pointing at this fake."""
        return {
            "mdmbot_apple_api": "school",
            "mdmbot_apple_client_id": CLIENT_ID,
            "mdmbot_apple_key_id": KEY_ID,
            "mdmbot_apple_key_file": key_file,
            "mdmbot_apple_api_url": self.url,
            "mdmbot_apple_token_url": self.token_url,
        }

    def add_server(self, server_id: str, name: str, **attributes: Any) -> None:
        """An MDM server in Apple School Manager."""
        self.servers[server_id] = {"serverName": name, **attributes}

    def add_device(self, serial: str, server: str | None = None, family: str = "iPad") -> None:
        """A device of the organisation, assigned to `server` (an id) or to none."""
        self.devices[serial] = {"productFamily": family, "deviceModel": f"{family} (A1)",
                                "server": server}  # fmt: skip

    def fault(self, prefix: str, **how: Any) -> None:
        """Queue one fault."""
        self.faults.append(Fault(prefix, **how))

    @contextmanager
    def running(self) -> Iterator[FakeApple]:
        """Serve until the block ends."""
        fake = self

        class Handler(_Handler):
            apple = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    # ----- resources -----
    def page(self, path: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> Any:
        """One page of `items` with Apple's `links.next` and `meta.paging`."""
        start = int(query.get("cursor", ["0"])[0])
        chunk = items[start : start + self.page_size]
        document: dict[str, Any] = {"data": chunk, "links": {"self": self.url + path}}
        paging: dict[str, Any] = {"limit": self.page_size}
        if start + self.page_size < len(items):
            cursor = str(start + self.page_size)
            rest = {k: v[0] for k, v in query.items() if k != "cursor"}
            params = "&".join(f"{k}={v}" for k, v in rest.items())
            document["links"]["next"] = f"{self.url}{path}?{params}&cursor={cursor}"
            paging["nextCursor"] = cursor
        document["meta"] = {"paging": paging}
        return document

    def server_resource(self, server_id: str) -> dict[str, Any]:
        """An mdmServers resource."""
        attributes = {k: v for k, v in self.servers[server_id].items() if k != "certificate"}
        return {"type": "mdmServers", "id": server_id, "attributes": attributes}

    def complete(self, activity: dict[str, Any]) -> None:
        """Apple finishes an activity: the devices move (unless it fails)."""
        activity["polls"] += 1
        if activity["polls"] < self.polls_to_complete or activity["status"] != "IN_PROGRESS":
            return
        if self.fail_activities:
            activity["status"], activity["subStatus"] = "FAILED", "COMPLETED_WITH_FAILURE"
            return
        for serial in activity["serials"]:
            if activity["type"] == "ASSIGN_DEVICES":
                self.devices[serial]["server"] = activity["server"]
            elif self.devices[serial]["server"] == activity["server"]:
                self.devices[serial]["server"] = None
        activity["status"], activity["subStatus"] = "COMPLETED", "COMPLETED_WITH_SUCCESS"


class _Handler(BaseHTTPRequestHandler):
    apple: FakeApple
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document).encode() if document is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, detail: str, **headers: str) -> None:
        self._send(status, {"errors": [{"status": str(status), "code": code, "title": code,
                                        "detail": detail}]}, headers)  # fmt: skip

    def _fault(self, path: str) -> bool:
        apple = self.apple
        with apple.lock:
            fault = next((f for f in apple.faults if path.startswith(f.prefix)), None)
            if fault is None:
                return False
            apple.faults.remove(fault)
            if fault.expire_tokens:
                apple.tokens.clear()
                return False
        if fault.cut:
            body = json.dumps({"data": [{"type": "orgDevices", "id": "X"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 500))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return True
        self._error(fault.status, "FAULT", "injected", **fault.headers)
        return True

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.apple.requests.append(("POST", split.path))
        if self._fault(split.path):
            return
        if split.path.startswith("/auth/oauth2/"):
            self._token(parse_qs(raw.decode()) | parse_qs(split.query))
            return
        if not self._authorized():
            return
        document = json.loads(raw)
        if split.path == "/v1/orgDeviceActivities":
            self._start_activity(document)
        elif split.path == "/v1/mdmServers":
            attributes = document["data"]["attributes"]
            server_id = uuid.uuid4().hex.upper()
            self.apple.add_server(server_id, attributes["serverName"],
                                  certificate=attributes["serverCertificate"])  # fmt: skip
            self._send(201, {"data": self.apple.server_resource(server_id), "links": {}})
        else:
            self._error(404, "NOT_FOUND", split.path)

    def _token(self, params: dict[str, list[str]]) -> None:
        apple = self.apple
        apple.token_requests += 1
        if apple.revoked or params.get("client_id") != [CLIENT_ID]:
            self._send(400, {"error": "invalid_client"})
            return
        try:
            assertion = params["client_assertion"][0]
            if jwt.get_unverified_header(assertion).get("kid") != KEY_ID:
                raise jwt.InvalidTokenError("kid")
            claims = jwt.decode(assertion, apple.key.public_key(), algorithms=["ES256"],
                                audience=apple.token_url)  # fmt: skip
            if claims.get("sub") != CLIENT_ID:
                raise jwt.InvalidTokenError("sub")
        except (KeyError, jwt.InvalidTokenError):
            self._send(400, {"error": "invalid_client"})
            return
        token = uuid.uuid4().hex
        apple.tokens.add(token)
        self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                         "scope": params["scope"][0]})  # fmt: skip

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.apple.tokens:
            self._error(401, "NOT_AUTHORIZED", "Missing or expired access token")
            return False
        return True

    def _start_activity(self, document: dict[str, Any]) -> None:
        data = document["data"]
        serials = [d["id"] for d in data["relationships"]["devices"]["data"]]
        server = data["relationships"]["mdmServer"]["data"]["id"]
        unknown = [s for s in serials if s not in self.apple.devices]
        if server not in self.apple.servers or unknown:
            self._error(409, "ENTITY_ERROR", f"Unknown device or server: {unknown or server}")
            return
        activity_id = str(uuid.uuid4())
        activity = {"type": data["attributes"]["activityType"], "server": server,
                    "serials": serials, "status": "IN_PROGRESS", "subStatus": "SUBMITTED",
                    "polls": 0}  # fmt: skip
        self.apple.activities[activity_id] = activity
        self._send(201, self._activity(activity_id))

    def _activity(self, activity_id: str) -> dict[str, Any]:
        activity = self.apple.activities[activity_id]
        return {"data": {"type": "orgDeviceActivities", "id": activity_id, "attributes": {
            "status": activity["status"], "subStatus": activity["subStatus"]}}, "links": {}}

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        path, query, apple = split.path, parse_qs(split.query), self.apple
        apple.requests.append(("GET", path))
        if self._fault(path) or not self._authorized():
            return
        parts = path.strip("/").split("/")
        if path == "/v1/mdmServers":
            items = [apple.server_resource(i) for i in apple.servers]
        elif parts[:2] == ["v1", "mdmServers"] and parts[3:] == ["relationships", "devices"]:
            items = [{"type": "orgDevices", "id": s} for s, d in apple.devices.items()
                     if d["server"] == parts[2]]  # fmt: skip
        elif path == "/v1/orgDevices":
            items = [{"type": "orgDevices", "id": s, "attributes": {
                "serialNumber": s, "productFamily": d["productFamily"],
                "deviceModel": d["deviceModel"],
                "status": "ASSIGNED" if d["server"] else "UNASSIGNED"}}
                for s, d in apple.devices.items()]  # fmt: skip
        elif parts[:2] == ["v1", "orgDeviceActivities"] and len(parts) == 3:
            with apple.lock:
                apple.complete(apple.activities[parts[2]])
            self._send(200, self._activity(parts[2]))
            return
        else:
            self._error(404, "NOT_FOUND", path)
            return
        self._send(200, apple.page(path, items, query))
