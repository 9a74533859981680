"""Calls to MDM servers against raw sockets that misbehave: one total deadline, every failure one
line, only checked addresses, and nothing of a body but a short reason from known fields."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bot.mdm.addresses import allowed
from bot.mdm.installer import MdmInstaller
from core.connections.links import InstallError, TokenPush, make_spec
from core.settings import Settings, parse_networks
from tests.fakemdm import ALLOW_LOOPBACK, FakeFleet
from tests.fakemdm import installer as mdm_installer

Behaviour = Callable[[socket.socket], None]


class RawServer:
    """A TCP server on 127.0.0.1 that reads a request's head, then does `behaviour`."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            try:
                self.behaviour(conn)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting."""
        self.listener.close()


@pytest.fixture
def raw() -> Iterator[Callable[[Behaviour], RawServer]]:
    """Start raw servers; all closed at the end."""
    started: list[RawServer] = []

    def start(behaviour: Behaviour) -> RawServer:
        started.append(RawServer(behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _fetch(port: int, timeout: float = 5.0) -> InstallError:
    spec = make_spec("fleet", url=f"http://127.0.0.1:{port}", api_key="fleet-api-token")
    with pytest.raises(InstallError) as refused:
        mdm_installer(timeout).fetch_certificate(spec, "school1")
    return refused.value


def test_a_server_trickling_its_answer_is_cut_at_the_total_deadline(
    raw: Callable[[Behaviour], RawServer],
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
    raw: Callable[[Behaviour], RawServer], answer: bytes, expected: str
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
    raw: Callable[[Behaviour], RawServer],
) -> None:
    def answer(status: int, body: bytes) -> Behaviour:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return lambda conn: conn.sendall(head + body)

    secret = b"AccessKeyId=ASIAEXAMPLE SecretAccessKey=wJalrXUtnFEMI"
    assert _fetch(raw(answer(500, secret)).port).message == "500 from Fleet (127.0.0.1)."
    long = json.dumps({"message": "x\x1b[31m" + "y" * 500, "other": secret.decode()})
    message = _fetch(raw(answer(422, long.encode())).port).message
    assert message == "422 from Fleet (127.0.0.1): x [31m" + "y" * 113 + "….", message


@pytest.fixture
def fleet() -> Iterator[FakeFleet]:
    """A running Fleet-shaped fake."""
    fake = FakeFleet("fleet-api-token").start()
    yield fake
    fake.stop()
