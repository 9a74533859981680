"""Fleet's ABM token API (fleetdm/fleet server/service/handler.go: abm_public_key, abm_tokens)."""

from __future__ import annotations

import base64
import binascii

from bot.mdm.wire import Wire, multipart, parse_time
from core.connections.links import ConnectionSpec, Installed, InstallError, TokenPush

API = "/api/latest/fleet"


def _headers(spec: ConnectionSpec, content_type: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {spec.api_key}", "User-Agent": "mdmbot"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def fetch_certificate(wire: Wire, spec: ConnectionSpec, server_name: str) -> bytes:
    """`GET …/mdm/apple/abm_public_key`: `{"public_key": base64 of the PEM}`."""
    reply = wire.request("GET", f"{spec.url}{API}/mdm/apple/abm_public_key", _headers(spec))
    if reply.status >= 300:
        hint = "generate Fleet's ABM key pair first" if reply.status == 404 else ""
        raise wire.refusal(reply, hint)
    data = reply.json()
    try:
        pem = base64.b64decode(str(data["public_key"]), validate=True)
    except (TypeError, KeyError, binascii.Error) as exc:
        raise InstallError("Fleet answered without a public key; is --mdm-url Fleet's?") from exc
    return pem


def install(wire: Wire, spec: ConnectionSpec, push: TokenPush) -> Installed:
    """The first token is `POST …/abm_tokens`; later ones renew it: `PATCH …/{id}/renew`.
    Fleet answers the ABM token's id and its `renew_date` (the token's expiry)."""
    body, content_type = multipart("token", push.filename, push.content)
    headers = _headers(spec, content_type)
    reply = None
    if spec.remote_id:
        url = f"{spec.url}{API}/abm_tokens/{spec.remote_id}/renew"
        reply = wire.request("PATCH", url, headers, body)
        if reply.status == 404:  # deleted in Fleet meanwhile: upload it as a new ABM token
            reply = None
    if reply is None:
        reply = wire.request("POST", f"{spec.url}{API}/abm_tokens", headers, body)
    if reply.status >= 300:
        raise wire.refusal(reply)
    data = reply.json()
    token = data.get("abm_token") if isinstance(data, dict) else None
    if not isinstance(token, dict) or "id" not in token:
        raise InstallError("Fleet answered without the ABM token's id; is --mdm-url Fleet's?")
    return Installed(str(token["id"]), parse_time(token.get("renew_date")))
