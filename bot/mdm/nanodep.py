"""NanoDEP's API (micromdm/nanodep http/api): its token key pair, token upload and DEP config."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

from bot.mdm.wire import Reply, Wire, parse_time, reason
from core.connections.links import ConnectionSpec, Installed, InstallError, TokenPush

VALIDITY_DAYS = 365  # NanoDEP's default is 1 day; mdmbot would warn of an expired certificate


def _headers(spec: ConnectionSpec, content_type: str | None = None) -> dict[str, str]:
    # NanoDEP's API is HTTP Basic with the fixed user name "depserver" and its API key.
    key = base64.b64encode(f"depserver:{spec.api_key}".encode()).decode("ascii")
    headers = {"Authorization": f"Basic {key}", "User-Agent": "mdmbot"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def _url(spec: ConnectionSpec, endpoint: str) -> str:
    return f"{spec.url}/v1/{endpoint}/{quote(spec.dep_name or '', safe='')}"


def _check(wire: Wire, spec: ConnectionSpec, reply: Reply) -> None:
    if reply.status < 300:
        return
    data = reply.json()
    error = str(data.get("error", "")) if isinstance(data, dict) else ""
    if "mismatched consumer key" in error:
        raise wire.refusal(
            reply,
            "it holds a token with another consumer key under this DEP name, which mdmbot did "
            "not install there through this connection (another server's?); mdmbot replaces "
            "only its own",
        )
    if reply.status == 500 and ("no such file" in error or "not found" in error.lower()):
        raise InstallError(
            f"NanoDEP has no DEP name “{spec.dep_name}” ready for a token ({reason(reply)}); "
            "check --mdm-dep-name."
        )
    raise wire.refusal(reply)


def fetch_certificate(wire: Wire, spec: ConnectionSpec, server_name: str) -> bytes:
    """`GET /v1/tokenpki/{name}`: NanoDEP makes a key pair and answers its certificate (PEM)."""
    query = urlencode({"cn": server_name[:64], "validity_days": VALIDITY_DAYS})
    reply = wire.request("GET", f"{_url(spec, 'tokenpki')}?{query}", _headers(spec))
    _check(wire, spec, reply)
    if b"-----BEGIN CERTIFICATE-----" not in reply.body:
        raise InstallError("NanoDEP answered without a certificate; is --mdm-url NanoDEP's?")
    return reply.body


def install(wire: Wire, spec: ConnectionSpec, push: TokenPush) -> Installed:
    """`PUT /v1/tokenpki/{name}` with the token file, then point NanoDEP at mdmbot if asked;
    NanoDEP answers the decrypted tokens, whose `access_token_expiry` is the token's expiry."""
    # NanoDEP refuses a changed consumer key unless forced; mdmbot forces only over the server's
    # own earlier token (core/connections/installs.py), after the person confirmed a new key.
    url = _url(spec, "tokenpki") + ("?force=1" if push.new_key else "")
    reply = wire.request("PUT", url, _headers(spec), push.content)
    _check(wire, spec, reply)
    data = reply.json()  # the token's secrets are in it too: only the expiry is kept
    expiry = parse_time(data.get("access_token_expiry") if isinstance(data, dict) else None)
    if spec.base_url:
        body = json.dumps({"base_url": spec.base_url}).encode()
        headers = _headers(spec, "application/json")
        _check(wire, spec, wire.request("PUT", _url(spec, "config"), headers, body))
    return Installed(expires_at=expiry)
