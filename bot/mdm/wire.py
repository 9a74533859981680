"""Outbound HTTP to MDM servers: only to checked addresses, TLS verified (optionally against a
named CA bundle), one total deadline however slowly the server answers, no redirects
(credentials must not follow one to another host), and every failure one line."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bot.mdm import addresses
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


class _Cutoff:
    """Shuts the socket down at the deadline, so a read in progress returns at once."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Cut this socket (the TLS one once wrapped) at the deadline."""
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shut()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            try:  # the plain socket's shutdown: it unblocks a TLS read in another thread too
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        """The request ended before the deadline."""
        self._timer.cancel()


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

    def _context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise InstallError(
                f"Cannot read the CA bundle {self.ca_bundle} (MDMBOT_MDM_CA_BUNDLE): {exc}."
            ) from exc

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
        context = self._context() if parts.scheme == "https" else None
        cutoff = _Cutoff(self._left())
        sent = False
        try:
            sock = self._connect(usable, cutoff)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
                cutoff.watch(sock)
            conn: http.client.HTTPConnection
            if context is not None:
                conn = http.client.HTTPSConnection(host, port, context=context)
            else:
                conn = http.client.HTTPConnection(host, port)
            conn.sock = sock  # connected to the checked address: never resolved again
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, target, body=body, headers=headers)
                sent = True
                response = conn.getresponse()
                whole = response.length is not None and response.length <= MAX_BODY
                # read(amt) returns a short body silently; read() refuses one (IncompleteRead)
                return Reply(response.status, response.read() if whole else response.read(MAX_BODY))
            finally:
                conn.close()
        except InstallError:
            raise
        except Exception as exc:
            raise self._failure(exc, host, cutoff.fired, sent) from exc
        finally:
            cutoff.cancel()

    def _connect(
        self, usable: list[tuple[addresses.Address, int]], cutoff: _Cutoff
    ) -> socket.socket:
        error: OSError | None = None
        for ip, port in usable:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            cutoff.watch(sock)
            try:
                sock.settimeout(self._left())
                sock.connect((str(ip), port))
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if cutoff.fired:
                    break
        assert error is not None
        raise error

    def _failure(self, exc: Exception, host: str, late: bool, sent: bool) -> InstallError:
        """One line for whatever went wrong on the way (never the request's headers)."""
        if late or isinstance(exc, TimeoutError):
            return self._slow()
        if isinstance(exc, ssl.SSLCertVerificationError):
            return InstallError(
                f"TLS failure with {self.what} at {host}: {exc.verify_message}; if it uses "
                "a private CA, name its bundle in MDMBOT_MDM_CA_BUNDLE."
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
    boundary = f"mdmbot-{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
        f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
