"""Outbound HTTP to MDM servers on urllib3: only to checked addresses, TLS verified (optionally
against a named CA bundle) for the URL's name, one total deadline however slowly the server
answers, no redirects (credentials must not follow one to another host), connections kept open
between calls, and every failure one line."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from urllib3 import BaseHTTPResponse, Timeout, encode_multipart_formdata
from urllib3.exceptions import HTTPError, NewConnectionError

from bot.mdm import addresses, pool
from core.connections.links import InstallError
from core.settings import Network

MAX_BODY = 1024 * 1024
MAX_REASON = 120


@dataclass(frozen=True)
class Reply:
    """A status and the body an MDM server answered with."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Wire:
    """Makes the HTTP requests of one operation with one MDM server, named `what` in errors;
    all of them together end within `timeout` seconds of the Wire's creation."""

    def __init__(
        self,
        what: str,
        timeout: float = 10.0,
        ca_bundle: str | None = None,
        allow: Sequence[Network] = (),
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.ca_bundle = ca_bundle
        self.allow = tuple(allow)
        self.deadline = time.monotonic() + timeout

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._slow()
        return left

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> Reply:
        """Send one request; any HTTP status comes back as a Reply, every other failure raises
        InstallError."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise InstallError(f"The URL of {self.what} has a malformed port.") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise InstallError(f"The URL of {self.what} is not an http(s) URL.")
        usable = addresses.resolve(self.what, host, port, self.allow, self._left())
        context = pool.tls_context(self.ca_bundle) if parts.scheme == "https" else None
        name = f"[{host}]" if ":" in host else host
        default = port == (443 if parts.scheme == "https" else 80)
        headers = {**headers, "Host": name if default else f"{name}:{port}"}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = {"method": method, "url": target, "body": body, "headers": headers}
        with pool.Call(self._left()) as call:
            try:
                response = self._open(call, usable, parts.scheme, host, context, request)
                return Reply(response.status, _read(response))
            except InstallError:
                raise
            except Exception as exc:
                raise self._failure(_cause(exc), host, call.fired, call.sent) from exc

    def _open(
        self,
        call: pool.Call,
        usable: list[tuple[addresses.Address, int]],
        scheme: str,
        host: str,
        context: ssl.SSLContext | None,
        request: dict[str, Any],
    ) -> BaseHTTPResponse:
        """The response from the first checked address that takes the connection (never the
        name resolved again)."""
        error: NewConnectionError | None = None
        for ip, port in usable:
            connections = pool.pool_for(scheme, str(ip), port, host, context)
            try:
                return connections.urlopen(
                    **request,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                    timeout=Timeout(total=self._left()),
                )
            except NewConnectionError as exc:
                error = exc
                if call.fired:
                    break
        assert error is not None
        raise error

    def _failure(self, exc: BaseException, host: str, late: bool, sent: bool) -> InstallError:
        """One line for whatever went wrong on the way (never the request's headers)."""
        if late or isinstance(exc, TimeoutError):
            return self._slow()
        if isinstance(exc, ssl.SSLCertVerificationError):
            return InstallError(
                f"TLS failure with {self.what} at {host}: {exc.verify_message.rstrip('.')}; if "
                "it uses a private CA, name its bundle in MDMBOT_MDM_CA_BUNDLE."
            )
        if isinstance(exc, ssl.SSLError):
            return InstallError(f"TLS failure with {self.what} at {host}: {exc.reason or exc}.")
        if isinstance(exc, ValueError) and not sent:  # e.g. a header value with a line break
            return InstallError(
                f"Cannot send the request to {self.what}: the API key or URL holds characters "
                "HTTP cannot carry."
            )
        if isinstance(exc, http.client.HTTPException | ValueError):
            return InstallError(
                f"{self.what} at {host} did not answer in HTTP mdmbot can read "
                f"({type(exc).__name__})."
            )
        if isinstance(exc, OSError):
            return InstallError(f"Cannot reach {self.what} at {host}: {exc.strerror or exc}.")
        return InstallError(f"The request to {self.what} at {host} failed ({type(exc).__name__}).")

    def _slow(self) -> InstallError:
        return InstallError(f"{self.what} did not answer within {self.timeout:g} s.")

    def refusal(self, reply: Reply, hint: str = "") -> InstallError:
        """A one-line error for a refusal, with the MDM server's own reason when it gives one."""
        if reply.status in (401, 403):
            return InstallError(f"{reply.status} from {self.what} — check the API key.")
        if 300 <= reply.status < 400:
            return InstallError(
                f"{reply.status} from {self.what}: mdmbot does not follow redirects; "
                "give the final URL."
            )
        detail = reason(reply)
        text = f"{reply.status} from {self.what}" + (f": {detail}" if detail else "")
        return InstallError(text + (f" — {hint}" if hint else "") + ".")


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time an MDM server answered, in UTC (None when absent or malformed)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None or moment.year < 2000:  # Go's zero time is 0001-01-01
        return None
    return moment.astimezone(UTC).replace(microsecond=0)


def reason(reply: Reply) -> str:
    """The error text NanoDEP (`error`) or Fleet (`errors[0].reason`, `message`) put in a JSON
    body, short and printable; nothing else of the body is ever repeated."""
    data = reply.json()
    text = ""
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            text = _text(errors[0].get("reason"))
        text = text or _text(data.get("error")) or _text(data.get("message"))
    printable = "".join(c if c.isprintable() else " " for c in text)
    words = " ".join(printable.split())
    if len(words) > MAX_REASON:
        words = words[: MAX_REASON - 1].rstrip() + "…"
    return words.rstrip(".")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type."""
    return encode_multipart_formdata({field: (filename, content, "application/octet-stream")})


def _read(response: BaseHTTPResponse) -> bytes:
    """The body, up to MAX_BODY; a body shorter than its Content-Length is an error."""
    try:
        length = response.length_remaining
        if length is not None and length <= MAX_BODY:
            return response.read()
        body = response.read(MAX_BODY)
        if len(body) == MAX_BODY:
            response.close()  # the rest is never read: the connection cannot be used again
        return body
    finally:
        response.release_conn()


def _cause(exc: BaseException) -> BaseException:
    """The error under urllib3's wrappers (ProtocolError, SSLError, NewConnectionError, …)."""
    while isinstance(exc, HTTPError):
        inner = next((a for a in exc.args if isinstance(a, BaseException)), exc.__cause__)
        if inner is None:
            break
        exc = inner
    return exc
