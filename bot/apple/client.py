"""The client of Apple's School Manager / Business API (ASM-API.md §2 to §5): an ES256 client
assertion for an hourly access token (a fresh one once on 401), pages followed to the end."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

from bot.apple.http import Answer, Transport
from core.apple.api import (
    Activity,
    AppleDevice,
    AppleInventory,
    AppleMalformed,
    AppleRefused,
    AppleRejected,
    AppleServer,
)
from core.errors import ConfigError
from core.settings import Settings

CALL_SECONDS = 120.0  # total deadline of one call, retries and a 60 s Retry-After included
TOKEN_MARGIN = 60.0  # an access token is renewed this long before Apple's `expires_in`
ASSERTION_SECONDS = 300
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_PAGES = 10_000
SERVER_FIELDS = "serverName,serverType,enableMdmDisownFlag,lastConnectedDateTime"
DEVICE_FIELDS = "serialNumber,deviceModel,productFamily,color,orderNumber,status"


class AppleClient:
    """Apple's API for one API account; safe to share between threads."""

    def __init__(self, settings: Settings, transport: Transport | None = None) -> None:
        missing = [
            name
            for name, value in (
                ("MDMBOT_APPLE_CLIENT_ID", settings.mdmbot_apple_client_id),
                ("MDMBOT_APPLE_KEY_ID", settings.mdmbot_apple_key_id),
                ("MDMBOT_APPLE_KEY_FILE", settings.mdmbot_apple_key_file),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"Apple mode needs {', '.join(missing)} (the API account).")
        self.settings = settings
        self.portal = settings.apple_portal
        self.client_id = str(settings.mdmbot_apple_client_id)
        self.scope = f"{settings.mdmbot_apple_api or 'school'}.api"
        self.origin = settings.apple_api_url
        self.transport = transport or Transport()
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    # -- OAuth (ASM-API.md §2) -------------------------------------------------------------

    def _key(self) -> bytes:
        path = self.settings.mdmbot_apple_key_file
        try:
            return path.read_bytes() if path else b""
        except OSError as exc:
            raise ConfigError(
                f"Cannot read MDMBOT_APPLE_KEY_FILE {path}: {exc.strerror or exc}."
            ) from None

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id, "sub": self.client_id, "aud": self.settings.apple_token_url,
            "iat": now, "exp": now + ASSERTION_SECONDS, "jti": str(uuid.uuid4()),
        }  # fmt: skip
        headers = {"alg": "ES256", "kid": str(self.settings.mdmbot_apple_key_id), "typ": "JWT"}
        try:
            return jwt.encode(claims, self._key(), algorithm="ES256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ConfigError(
                "MDMBOT_APPLE_KEY_FILE is not the API account's EC P-256 private key (PEM)."
            ) from None

    def _access_token(self, deadline: float, *, fresh: bool = False) -> str:
        with self._lock:
            clock = self.transport.clock
            if self._token and not fresh and self._token[1] > clock():
                return self._token[0]
            form = urlencode({
                "grant_type": "client_credentials", "client_id": self.client_id,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self._assertion(),
                "scope": self.scope,
            }).encode()  # fmt: skip
            answer = self.transport.call(
                "POST", self.settings.apple_token_url, deadline, body=form,
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "Accept": "application/json"},
            )  # fmt: skip
            if answer.status in (400, 401, 403):
                raise AppleRefused(
                    "Apple refused the API account (" + _oauth_error(answer) + "): it may have "
                    "been revoked, or MDMBOT_APPLE_CLIENT_ID, MDMBOT_APPLE_KEY_ID or "
                    "MDMBOT_APPLE_KEY_FILE do not match it."
                )
            document = _expect(answer, 200)
            token, lifetime = document.get("access_token"), document.get("expires_in", 3600)
            if not isinstance(token, str) or not token or not isinstance(lifetime, int):
                raise AppleMalformed("Apple's token endpoint answered without an access token.")
            self._token = (token, clock() + max(lifetime - TOKEN_MARGIN, 1.0))
            return token

    # -- calls ----------------------------------------------------------------------------

    def _call(self, method: str, url: str, document: Any = None, expect: int = 200) -> Any:
        """One API call: Bearer token, one retry with a fresh token on 401."""
        deadline = self.transport.clock() + CALL_SECONDS
        body = json.dumps(document).encode() if document is not None else None
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for fresh in (False, True):
            headers["Authorization"] = f"Bearer {self._access_token(deadline, fresh=fresh)}"
            answer = self.transport.call(method, url, deadline, headers=headers, body=body)
            if answer.status != 401:
                break
        if answer.status in (401, 403):
            raise AppleRefused(
                f"Apple refused the API account's request (HTTP {answer.status}: "
                f"{_error_title(answer)}); check its permissions in {self.portal}."
            )
        return _expect(answer, expect)

    def _url(self, path: str, **query: str) -> str:
        return f"{self.origin}{path}" + (f"?{urlencode(query)}" if query else "")

    def _pages(self, url: str) -> Iterator[dict[str, Any]]:
        """Every resource of a list, following `links.next` (only to Apple's own origin)."""
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            document = self._call("GET", url)
            data = document.get("data")
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise AppleMalformed("Apple answered a list without its `data` array.")
            yield from data
            links = document.get("links")
            following = links.get("next") if isinstance(links, dict) else None
            if not following:
                return
            if not isinstance(following, str) or not _same_origin(following, self.origin):
                raise AppleMalformed("Apple's next page link points somewhere else.")
            if following in seen:
                raise AppleMalformed("Apple's pages lead back to a page already read.")
            seen.add(following)
            url = following
        raise AppleMalformed(f"Apple's list went on for more than {MAX_PAGES} pages.")

    # -- the AppleApi protocol ------------------------------------------------------------

    def inventory(self) -> AppleInventory:
        """Every MDM server, every device and every assignment, read to the last page."""
        servers = [
            _server(r)
            for r in self._pages(self._url(
                "/v1/mdmServers", **{"fields[mdmServers]": SERVER_FIELDS, "limit": "1000"}
            ))
        ]  # fmt: skip
        assigned: dict[str, str] = {}
        for server in servers:
            for linkage in self._pages(self._url(
                f"/v1/mdmServers/{server.id}/relationships/devices", limit="1000"
            )):  # fmt: skip
                assigned[_text(linkage, "id")] = server.id
        devices = [
            _device(r, assigned)
            for r in self._pages(self._url(
                "/v1/orgDevices", **{"fields[orgDevices]": DEVICE_FIELDS, "limit": "1000"}
            ))
        ]  # fmt: skip
        return AppleInventory(servers, devices)

    def start_activity(self, kind: str, server_id: str, serials: Sequence[str]) -> Activity:
        """POST /v1/orgDeviceActivities (ASM-API.md §5.1): 201 with the activity."""
        document = {"data": {
            "type": "orgDeviceActivities",
            "attributes": {"activityType": kind},
            "relationships": {
                "mdmServer": {"data": {"type": "mdmServers", "id": server_id}},
                "devices": {"data": [{"type": "orgDevices", "id": s} for s in serials]},
            },
        }}  # fmt: skip
        return _activity(self._call("POST", self._url("/v1/orgDeviceActivities"), document, 201))

    def activity(self, activity_id: str) -> Activity:
        """GET /v1/orgDeviceActivities/{id} (ASM-API.md §5.2)."""
        return _activity(self._call("GET", self._url(f"/v1/orgDeviceActivities/{activity_id}")))

    def create_server(
        self, name: str, certificate_der: bytes, file_name: str, release_devices: bool
    ) -> AppleServer:
        """POST /v1/mdmServers (Apple Business 2.1+, ASM-API.md §4.6): 201 with the server."""
        document = {"data": {"type": "mdmServers", "attributes": {
            "serverName": name,
            "serverCertificate": {"name": file_name,
                                  "data": base64.b64encode(certificate_der).decode()},
            "enableMdmDisownFlag": release_devices,
        }}}  # fmt: skip
        answer = self._call("POST", self._url("/v1/mdmServers"), document, 201)
        return _server(_data(answer))


def _same_origin(url: str, origin: str) -> bool:
    one, other = urlsplit(url), urlsplit(origin)
    return (one.scheme, one.netloc) == (other.scheme, other.netloc)


def _expect(answer: Answer, status: int) -> Any:
    """The JSON document of an answer with `status`; a refusal or a malformed answer otherwise."""
    if answer.status != status and not (status == 200 and answer.status == 201):
        if 400 <= answer.status < 500:
            raise AppleRejected(f"Apple refused: {_error_title(answer)} (HTTP {answer.status}).")
        raise AppleMalformed(f"Apple answered HTTP {answer.status} where {status} was expected.")
    document = answer.json()
    if not isinstance(document, dict):
        raise AppleMalformed("Apple answered JSON that is not a document.")
    return document


def _error_title(answer: Answer) -> str:
    """`errors[0]`'s detail or title (ASM-API.md §1.6), else the status."""
    try:
        first = json.loads(answer.body)["errors"][0]
        text = first.get("detail") or first.get("title")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = None
    return str(text)[:300] if text else f"HTTP {answer.status}"


def _oauth_error(answer: Answer) -> str:
    try:
        return str(json.loads(answer.body)["error"])[:60]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {answer.status}"


def _data(document: dict[str, Any]) -> dict[str, Any]:
    data = document.get("data")
    if not isinstance(data, dict):
        raise AppleMalformed("Apple answered a document without its `data` object.")
    return data


def _text(resource: dict[str, Any], name: str) -> str:
    value = resource.get(name)
    if not isinstance(value, str) or not value:
        raise AppleMalformed(f"Apple sent a resource without its `{name}`.")
    return value


def _attributes(resource: dict[str, Any]) -> dict[str, Any]:
    attributes = resource.get("attributes", {})
    if not isinstance(attributes, dict):
        raise AppleMalformed("Apple sent a resource whose `attributes` is not an object.")
    return attributes


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise AppleMalformed(f"Apple sent a date mdmbot cannot read: {str(value)[:40]}.") from None
    if moment.tzinfo is None:
        raise AppleMalformed("Apple sent a date without its time zone.")
    return moment


def _server(resource: dict[str, Any]) -> AppleServer:
    attributes = _attributes(resource)
    flag = attributes.get("enableMdmDisownFlag")
    return AppleServer(
        id=_text(resource, "id"),
        name=_text(attributes, "serverName"),
        last_connected_at=_when(attributes.get("lastConnectedDateTime")),
        release_devices=flag if isinstance(flag, bool) else None,
    )


def _device(resource: dict[str, Any], assigned: dict[str, str]) -> AppleDevice:
    serial = _text(resource, "id")
    attributes = _attributes(resource)
    return AppleDevice(
        serial=serial,
        family=str(attributes.get("productFamily") or "iPad"),
        model=str(attributes.get("deviceModel") or ""),
        color=str(attributes.get("color") or ""),
        order_number=str(attributes["orderNumber"]) if attributes.get("orderNumber") else None,
        server_id=assigned.get(serial),
    )


def _activity(document: dict[str, Any]) -> Activity:
    data = _data(document)
    attributes = _attributes(data)
    status = attributes.get("status")
    if status not in ("IN_PROGRESS", "COMPLETED", "STOPPED", "FAILED"):
        raise AppleMalformed(f"Apple sent an activity status mdmbot does not know: {status!r:.40}.")
    return Activity(_text(data, "id"), str(status), str(attributes.get("subStatus") or ""))
