"""Stand-ins for MDM servers' own APIs on an ephemeral port, shaped after their handlers.

`FakeNanoDep` follows micromdm/nanodep `http/api` (tokenpki.go, tokens.go, config.go): HTTP Basic
`depserver:KEY`; `GET /v1/tokenpki/NAME` makes a new staged key pair and answers its certificate;
`PUT /v1/tokenpki/NAME` decrypts the token with the staged key, refuses a changed consumer key
unless `?force=1` (500 `{"error": "mismatched consumer key"}`), and stores it; errors are JSON
`{"error": …}` with status 500. `FakeFleet` follows fleetdm/fleet's abm_tokens handlers: Bearer
token; `GET …/abm_public_key` answers `{"public_key": base64 PEM}`; `POST …/abm_tokens` and
`PATCH …/abm_tokens/{id}/renew` take the multipart field `token`, decrypt it, and answer
`{"abm_token": {…}}`; a bad token is 400 with Fleet's `errors[0].reason`.

Both decrypt the token file for real (CMS EnvelopedData), so a test sees what the MDM server got.
Faults on demand: `fail_next` (status and body), `answer_next_raw` (bytes that are not HTTP),
`delay` (seconds before answering), TLS with a self-signed certificate (`tls=True`), and stopping
the server (down).
"""

from __future__ import annotations

import base64
import email.parser
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from bot.mdm.installer import MdmInstaller
from core.settings import parse_networks
from core.tokens.token_file import parse_content
from tests import certs

NANODEP_KEY = "nanodep-api-key"
ALLOW_LOOPBACK = "127.0.0.0/8"  # MDMBOT_MDM_ALLOW_NETWORKS wherever the fakes are used


def installer(timeout: float = 10.0, ca_bundle: str | None = None) -> MdmInstaller:
    """The real installer, allowed to reach the fakes on loopback."""
    return MdmInstaller(timeout, ca_bundle, parse_networks(ALLOW_LOOPBACK))


def decrypt_token(file: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The JSON inside a token file, as the MDM server decrypts it (ValueError if it cannot)."""
    _, _, body = file.partition(b"\n\n")
    der = base64.b64decode(body)
    return parse_content(pkcs7.pkcs7_decrypt_der(der, cert, key, []))


@dataclass
class Call:
    """One request the fake received (never its Authorization header)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes = field(repr=False)


class FakeMdm:
    """The HTTP plumbing shared by the fakes: recording, faults, TLS, start and stop."""

    def __init__(self, api_key: str, *, tls: bool = False) -> None:
        self.api_key = api_key
        self.calls: list[Call] = []
        self.failures: list[tuple[str | None, int, bytes]] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        self.tls = tls
        self.tls_cert = _localhost_cert() if tls else None
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> FakeMdm:
        """Listen on 127.0.0.1 on an ephemeral port."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                fake.handle(self)

            do_GET = do_PUT = do_POST = do_PATCH = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as scratch:
                cert_file, key_file = Path(scratch) / "c.pem", Path(scratch) / "k.pem"
                cert_file.write_bytes(self.tls_cert.pem)
                key_file.write_bytes(self.tls_cert.key_pem)
                context.load_cert_chain(cert_file, key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """The base URL clients are given."""
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop listening (the MDM server is down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail_next(self, status: int, body: dict[str, Any], method: str | None = None) -> None:
        """Answer the next request (with `method`, if given) with `status` and a JSON body."""
        self.failures.append((method, status, json.dumps(body).encode()))

    def answer_next_raw(self, data: bytes, method: str | None = None) -> None:
        """Answer the next request (with `method`, if given) with `data` as it is, not HTTP."""
        self.failures.append((method, 0, data))

    def uploads(self) -> int:
        """How many token uploads reached the fake."""
        return sum(1 for c in self.calls if c.method in ("PUT", "POST", "PATCH") and c.body)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Record, apply faults, authenticate and route one request."""
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        with self.lock:
            self.calls.append(Call(request.command, parts.path, parse_qs(parts.query), body))
            failure = next(
                (f for f in self.failures if f[0] in (None, request.command)), None
            )
            if failure is not None:
                self.failures.remove(failure)
        if self.delay:
            time.sleep(self.delay)
        if failure is not None and failure[1] == 0:
            request.wfile.write(failure[2])
            request.close_connection = True
            return None
        if failure is not None:
            return self.reply(request, failure[1], failure[2])
        if not self.authorized(request.headers.get("Authorization", "")):
            return self.unauthorized(request)
        with self.lock:
            status, answer, kind = self.route(request, parts.path, parse_qs(parts.query), body)
        self.reply(request, status, answer, kind)

    def reply(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        kind: str = "application/json",
    ) -> None:
        """Send a response."""
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def authorized(self, header: str) -> bool:
        """Whether the Authorization header carries the API key."""
        raise NotImplementedError

    def unauthorized(self, request: BaseHTTPRequestHandler) -> None:
        """The MDM server's answer without the right API key."""
        raise NotImplementedError

    def route(
        self, request: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        """The answer to an authenticated request."""
        raise NotImplementedError


def _localhost_cert() -> certs.CertAndKey:
    """A self-signed server certificate for 127.0.0.1 (a private CA, as far as clients know)."""
    key = certs.rsa_key(2048, 30)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certs.CertAndKey(cert, key)


def _error(text: str) -> tuple[int, bytes, str]:
    return 500, json.dumps({"error": text}).encode(), "application/json"


class FakeNanoDep(FakeMdm):
    """NanoDEP's API: token key pairs, token uploads and DEP configs per DEP name."""

    def __init__(self, api_key: str = NANODEP_KEY, *, tls: bool = False) -> None:
        super().__init__(api_key, tls=tls)
        self.staged: dict[str, tuple[x509.Certificate, rsa.RSAPrivateKey]] = {}
        self.tokens: dict[str, dict[str, str]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.key_index = 10

    def authorized(self, header: str) -> bool:
        """HTTP Basic, user `depserver`."""
        expected = base64.b64encode(f"depserver:{self.api_key}".encode()).decode()
        return header == f"Basic {expected}"

    def unauthorized(self, request: BaseHTTPRequestHandler) -> None:
        """`http.Error(w, "Unauthorized", 401)` with a Basic challenge."""
        request.send_response(401)
        request.send_header("WWW-Authenticate", 'Basic realm="depserver"')
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.end_headers()
        request.wfile.write(b"Unauthorized\n")

    def route(
        self, request: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        """tokenpki (GET/PUT), config (PUT) and tokens (GET)."""
        for prefix in ("/v1/tokenpki/", "/v1/config/", "/v1/tokens/"):
            if path.startswith(prefix) and len(path) > len(prefix):
                name = unquote(path[len(prefix) :])
                break
        else:
            return 404, b"404 page not found\n", "text/plain"
        method = request.command
        if prefix == "/v1/tokenpki/" and method == "GET":
            return self._new_keypair(name, query)
        if prefix == "/v1/tokenpki/" and method == "PUT":
            return self._decrypt_and_store(name, body, query.get("force") == ["1"])
        if prefix == "/v1/config/" and method == "PUT":
            config = json.loads(body or b"{}")
            if not config.get("base_url"):
                return _error("empty base URL")
            self.configs[name] = config
            return 200, json.dumps(config).encode(), "application/json"
        if prefix == "/v1/tokens/" and method == "GET" and name in self.tokens:
            return 200, json.dumps(self.tokens[name]).encode(), "application/json"
        return 405, b"Method Not Allowed\n", "text/plain"

    def _new_keypair(self, name: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        days = int(query.get("validity_days", ["1"])[0])
        cn = query.get("cn", ["depserver"])[0]
        self.key_index += 1
        key = certs.rsa_key(2048, self.key_index)
        cert = certs.build_certificate(
            key.public_key(),
            key,
            subject=cn,
            serial=1,
            not_before=datetime.now(UTC) - timedelta(minutes=1),
            days=days,
        )
        self.staged[name] = (cert, key)
        return 200, certs.cert_pem(cert), "application/x-pem-file"

    def _decrypt_and_store(self, name: str, body: bytes, force: bool) -> tuple[int, bytes, str]:
        if name not in self.staged:
            return _error(f"open db/{name}.tokenpki.staging.pem: no such file or directory")
        cert, key = self.staged[name]
        try:
            fields = decrypt_token(body, cert, key)
        except ValueError as exc:
            return _error(f"decrypting token: {exc}")
        previous = self.tokens.get(name)
        if not force and previous and previous["consumer_key"] != fields["consumer_key"]:
            return _error("mismatched consumer key")
        self.tokens[name] = fields
        return 200, json.dumps(fields).encode(), "application/json"


class FakeFleet(FakeMdm):
    """Fleet's ABM token API: one ABM key pair, ABM tokens with ids."""

    def __init__(self, api_key: str = "fleet-api-token", *, tls: bool = False) -> None:
        super().__init__(api_key, tls=tls)
        self.key = certs.rsa_key(2048, 20)
        self.cert = certs.build_certificate(
            self.key.public_key(),
            self.key,
            subject="FleetDM",
            serial=1,
            not_before=datetime.now(UTC) - timedelta(minutes=1),
        )
        self.tokens: dict[int, dict[str, str]] = {}

    def authorized(self, header: str) -> bool:
        """Bearer API token."""
        return header == f"Bearer {self.api_key}"

    def unauthorized(self, request: BaseHTTPRequestHandler) -> None:
        """Fleet's authentication error body."""
        reason = {"name": "base", "reason": "Authentication required"}
        body = {"message": "Authentication required", "errors": [reason]}
        self.reply(request, 401, json.dumps(body).encode())

    def route(
        self, request: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str]:
        """abm_public_key, abm_tokens (POST) and abm_tokens/{id}/renew (PATCH)."""
        api = "/api/latest/fleet"
        if path == f"{api}/mdm/apple/abm_public_key" and request.command == "GET":
            answer = {"public_key": base64.b64encode(certs.cert_pem(self.cert)).decode()}
            return 200, json.dumps(answer).encode(), "application/json"
        if path == f"{api}/abm_tokens" and request.command == "POST":
            return self._store(None, request, body)
        prefix, suffix = f"{api}/abm_tokens/", "/renew"
        if path.startswith(prefix) and path.endswith(suffix) and request.command == "PATCH":
            token_id = int(path[len(prefix) : -len(suffix)])
            if token_id not in self.tokens:
                return self._bad(404, "Resource Not Found", "ABM token not found")
            return self._store(token_id, request, body)
        return self._bad(404, "Resource Not Found", "not found")

    def _bad(self, status: int, message: str, reason: str) -> tuple[int, bytes, str]:
        body = {"message": message, "errors": [{"name": "base", "reason": reason}]}
        return status, json.dumps(body).encode(), "application/json"

    def _store(
        self, token_id: int | None, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, str]:
        head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser().parsebytes(head + body)
        files = [
            part.get_payload(decode=True)
            for part in message.walk()
            if part.get_param("name", header="Content-Disposition") == "token"
        ]
        if not files or not isinstance(files[0], bytes):
            return self._bad(400, "Bad request", "token multipart field is required")
        try:
            fields = decrypt_token(files[0], self.cert, self.key)
        except ValueError:
            return self._bad(
                400,
                "Bad request",
                "Invalid token. Please provide a valid token from Apple Business Manager.",
            )
        token_id = token_id or len(self.tokens) + 1
        self.tokens[token_id] = fields
        answer = {
            "abm_token": {
                "id": token_id,
                "apple_id": "",
                "org_name": "Springfield School District",
                "renew_date": fields["access_token_expiry"],
                "terms_expired": False,
            }
        }
        return 200, json.dumps(answer).encode(), "application/json"
