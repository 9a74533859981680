"""Calls to MDM servers against raw sockets that misbehave: one total deadline, every failure one
line, only checked addresses, and nothing of a body but a short reason from known fields."""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from bot.mdm.addresses import allowed
from bot.mdm.installer import MdmInstaller
from core.connections.links import InstallError, TokenPush, make_spec
from core.settings import Settings, parse_networks
from tests import certs
from tests.fakemdm import ALLOW_LOOPBACK, FakeFleet, FakeNanoDep
from tests.fakemdm import installer as mdm_installer

Behaviour = Callable[[socket.socket], None]


class RawServer:
    """A TCP server on 127.0.0.1 that reads a request's head, then does `behaviour`."""

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        if tls is not None:
            self.listener = tls.wrap_socket(self.listener, server_side=True)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = _head(conn)
            if not head:
                return
            self.heads.append(head)
            try:
                self.behaviour(conn)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting."""
        self.listener.close()


def _head(conn: socket.socket) -> bytes:
    """A request's head as read from `conn`; empty when the client hung up first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        head += chunk
    return head


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    """Start raw servers; all closed at the end."""
    started: list[RawServer] = []

    def start(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> RawServer:
        started.append(RawServer(behaviour, tls))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _fetch(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> InstallError:
    spec = make_spec("fleet", url=f"http://{host}:{port}", api_key="fleet-api-token")
    with pytest.raises(InstallError) as refused:
        mdm_installer(timeout).fetch_certificate(spec, "school1")
    return refused.value


def test_a_server_trickling_its_answer_is_cut_at_the_total_deadline(
    raw: Callable[..., RawServer],
) -> None:
    def trickle(conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)  # each read gets a byte well inside any per-read timeout

    server = raw(trickle)
    started = time.monotonic()
    error = _fetch(server.port, timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert error.message == "Fleet (127.0.0.1) did not answer within 1 s."


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "(BadStatusLine)"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "(IncompleteRead)"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "(IncompleteRead)"),
        (b"", "(RemoteDisconnected)"),
    ],
)
def test_an_answer_that_is_not_http_is_one_line(
    raw: Callable[..., RawServer], answer: bytes, expected: str
) -> None:
    server = raw(lambda conn: conn.sendall(answer))
    error = _fetch(server.port)
    assert error.message == (
        f"Fleet (127.0.0.1) at 127.0.0.1 did not answer in HTTP mdmbot can read {expected}."
    )


def test_an_api_key_with_a_line_break_never_reaches_a_traceback(fleet: FakeFleet) -> None:
    spec = make_spec("fleet", url=fleet.url, api_key="fleet-api-token")
    object.__setattr__(spec, "api_key", "fleet-api\ntoken")  # stored before keys were checked
    push = TokenPush("school1", "school1_Token.p7m", b"x")
    with pytest.raises(InstallError) as refused:
        mdm_installer().install(spec, push)
    assert "fleet-api" not in refused.value.message
    assert refused.value.message.startswith("Cannot send the request to Fleet (127.0.0.1)")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}",
        "http://localhost:{port}",
        "http://2130706433:{port}",
        "http://[::1]:{port}",
        "http://[::ffff:127.0.0.1]:{port}",
        "http://169.254.169.254",
        "http://10.1.2.3",
        "http://0.0.0.0:{port}",
    ],
)
def test_loopback_private_and_metadata_addresses_are_refused(fleet: FakeFleet, url: str) -> None:
    port = fleet.url.rsplit(":", 1)[1]
    spec = make_spec("fleet", url=url.format(port=port), api_key="fleet-api-token")
    with pytest.raises(InstallError) as refused:
        MdmInstaller(timeout=2).fetch_certificate(spec, "school1")
    assert refused.value.message.startswith("mdmbot does not connect to ")
    assert refused.value.message.endswith(
        "address. An operator can allow its network in MDMBOT_MDM_ALLOW_NETWORKS."
    )
    assert fleet.calls == []


def test_the_allowlist_opens_only_the_networks_it_names(fleet: FakeFleet) -> None:
    spec = make_spec("fleet", url=fleet.url, api_key="fleet-api-token")
    assert mdm_installer().fetch_certificate(spec, "school1").startswith(b"-----BEGIN")
    other = MdmInstaller(timeout=2, allow_networks=parse_networks("10.0.0.0/8, fd00::/8"))
    with pytest.raises(InstallError, match="it is a loopback address"):
        other.fetch_certificate(spec, "school1")
    networks = parse_networks(ALLOW_LOOPBACK)
    assert Settings(mdmbot_mdm_allow_networks="127.0.0.0/8").mdm_allow_networks == networks
    for ip in ("8.8.8.8", "2001:4860:4860::8888"):
        assert allowed(parse_networks(ip)[0].network_address, ())
    for ip in ("100.64.0.1", "192.168.1.1", "fd00:ec2::254", "fe80::1", "224.0.0.1", "::"):
        assert not allowed(parse_networks(ip)[0].network_address, ())
    with pytest.raises(ValueError, match=re.escape("“10.0.0/33” is not a network")):
        Settings(mdmbot_mdm_allow_networks="10.0.0.0/8,10.0.0/33")


def test_only_a_short_reason_from_known_fields_comes_back(
    raw: Callable[..., RawServer],
) -> None:
    def answer(status: int, body: bytes) -> Behaviour:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return lambda conn: conn.sendall(head + body)

    secret = b"AccessKeyId=ASIAEXAMPLE SecretAccessKey=wJalrXUtnFEMI"
    assert _fetch(raw(answer(500, secret)).port).message == "500 from Fleet (127.0.0.1)."
    long = json.dumps({"message": "x\x1b[31m" + "y" * 500, "other": secret.decode()})
    message = _fetch(raw(answer(422, long.encode())).port).message
    assert message == "422 from Fleet (127.0.0.1): x [31m" + "y" * 113 + "….", message


PUBLIC_KEY = json.dumps({"public_key": base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode()})


def _keep_answering(conn: socket.socket) -> None:
    """Answer the request read, then every later one on the same connection (HTTP/1.1)."""
    answer = f"HTTP/1.1 200 OK\r\nContent-Length: {len(PUBLIC_KEY)}\r\n\r\n{PUBLIC_KEY}"
    while True:
        conn.sendall(answer.encode())
        if not _head(conn):
            return


def test_calls_to_one_server_share_a_kept_open_connection(
    raw: Callable[..., RawServer],
) -> None:
    server = raw(_keep_answering)
    spec = make_spec("fleet", url=f"http://127.0.0.1:{server.port}", api_key="fleet-api-token")
    for _ in range(3):  # one Wire each, as separate installs make
        assert mdm_installer().fetch_certificate(spec, "school1") == b"-----BEGIN CERTIFICATE-----"
    assert server.accepted == 1


def _resolutions_of(host: str, during: Callable[[], object]) -> int:
    """How many times the process resolved `host` while `during` ran (audit events, PEP 578)."""
    seen: list[object] = []
    _AUDIT.append(lambda event, args: event == "socket.getaddrinfo" and seen.append(args[0]))
    try:
        during()
    finally:
        _AUDIT.clear()
    return seen.count(host)


_AUDIT: list[Callable[[str, tuple[object, ...]], object]] = []
sys.addaudithook(lambda event, args: [hook(event, args) for hook in list(_AUDIT)] and None)


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    raw: Callable[..., RawServer],
) -> None:
    """No second lookup a DNS rebinding answer could steer; the server still sees its name."""
    server = raw(_keep_answering)
    spec = make_spec("fleet", url=f"http://localhost:{server.port}", api_key="fleet-api-token")
    assert _resolutions_of("localhost", lambda: mdm_installer().fetch_certificate(spec, "s")) == 1
    assert f"\r\nHost: localhost:{server.port}\r\n".encode() in server.heads[0]


def _named_cert(name: str) -> certs.CertAndKey:
    key = certs.rsa_key(2048, 31)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certs.CertAndKey(cert, key)


def test_tls_sends_and_verifies_the_urls_name_not_the_address_connected_to(
    raw: Callable[..., RawServer], tmp_path: Path
) -> None:
    named = _named_cert("localhost")
    (tmp_path / "cert.pem").write_bytes(named.pem)
    (tmp_path / "key.pem").write_bytes(named.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = raw(_keep_answering, context)
    installer = mdm_installer(timeout=5, ca_bundle=str(tmp_path / "cert.pem"))
    by_name = make_spec("fleet", url=f"https://localhost:{server.port}", api_key="fleet-api-token")
    assert installer.fetch_certificate(by_name, "s") == b"-----BEGIN CERTIFICATE-----"
    assert names == ["localhost"]
    assert f"\r\nHost: localhost:{server.port}\r\n".encode() in server.heads[0]
    by_address = make_spec("fleet", url=f"https://127.0.0.1:{server.port}", api_key="x-token")
    with pytest.raises(InstallError) as refused:
        installer.fetch_certificate(by_address, "s")
    assert refused.value.message == (
        "TLS failure with Fleet (127.0.0.1) at 127.0.0.1: IP address mismatch, certificate is not "
        "valid for '127.0.0.1'; if it uses a private CA, name its bundle in MDMBOT_MDM_CA_BUNDLE."
    )


def test_a_certificate_for_the_address_is_not_one_for_the_name(tmp_path: Path) -> None:
    tls = FakeNanoDep(tls=True).start()
    try:
        assert tls.tls_cert is not None
        (tmp_path / "ca.pem").write_bytes(tls.tls_cert.pem)
        installer = mdm_installer(timeout=5, ca_bundle=str(tmp_path / "ca.pem"))
        url = tls.url.replace("127.0.0.1", "localhost")
        spec = make_spec("nanodep", url=url, api_key="nanodep-api-key", dep_name="school1")
        with pytest.raises(InstallError, match="certificate is not valid for 'localhost'"):
            installer.fetch_certificate(spec, "school1")
        assert tls.calls == []
    finally:
        tls.stop()


@pytest.fixture
def fleet() -> Iterator[FakeFleet]:
    """A running Fleet-shaped fake."""
    fake = FakeFleet("fleet-api-token").start()
    yield fake
    fake.stop()
