"""Outbound HTTP to MDM servers: TLS verified (optionally against a named CA bundle), timeouts,
no redirects (credentials must not follow one to another host), and one-line errors."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.connections.links import InstallError

MAX_BODY = 1024 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the Authorization header must reach only the configured host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Never follow."""
        return None


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


@dataclass(frozen=True)
class Wire:
    """Makes HTTP requests to one kind of MDM server, named `what` in errors."""

    what: str
    timeout: float = 10.0
    ca_bundle: str | None = None

    def _context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise InstallError(
                f"Cannot read the CA bundle {self.ca_bundle} (MDMBOT_MDM_CA_BUNDLE): {exc}."
            ) from exc

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> Reply:
        """Send one request; any HTTP status comes back as a Reply, transport errors raise."""
        host = urlsplit(url).hostname or url
        opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=self._context())
        )
        req = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
        try:
            with opener.open(req, timeout=self.timeout) as response:
                return Reply(response.status, response.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(MAX_BODY) if exc.fp is not None else b"")
        except TimeoutError as exc:
            raise self._slow() from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise InstallError(
                    f"TLS failure with {self.what} at {host}: {reason.verify_message}; if it uses "
                    "a private CA, name its bundle in MDMBOT_MDM_CA_BUNDLE."
                ) from exc
            if isinstance(reason, ssl.SSLError):
                raise InstallError(
                    f"TLS failure with {self.what} at {host}: {reason.reason or reason}."
                ) from exc
            if isinstance(reason, TimeoutError):
                raise self._slow() from exc
            text = getattr(reason, "strerror", None) or str(reason)
            raise InstallError(f"Cannot reach {self.what} at {host}: {text}.") from exc
        except (ConnectionError, OSError) as exc:
            raise InstallError(f"Cannot reach {self.what} at {host}: {exc}.") from exc

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
        detail = _reason(reply)
        text = f"{reply.status} from {self.what}" + (f": {detail}" if detail else "")
        return InstallError(text + (f" — {hint}" if hint else "") + ".")


def _reason(reply: Reply) -> str:
    """The error text NanoDEP (`error`) or Fleet (`errors[0].reason`, `message`) put in a body."""
    data = reply.json()
    text = ""
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            text = str(errors[0].get("reason") or "")
        text = text or str(data.get("error") or data.get("message") or "")
    elif reply.body and not reply.body.lstrip().startswith(b"<"):
        text = reply.body.decode("utf-8", "replace")
    return " ".join(text.split())[:200].rstrip(".")


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type."""
    boundary = f"mdmbot-{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
        f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
