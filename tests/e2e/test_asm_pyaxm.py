"""`pyaxm` (PyPI), unmodified, against mdmbot's School Manager API: its requests session is pointed
at the local port by a transport adapter that maps Apple's hosts to 127.0.0.1; its pydantic
models validate every answer."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from core.devices import inventory
from tests.asm_support import ApplePort, apple_port
from tests.devices_support import OPERATOR

pyaxm_client = pytest.importorskip("pyaxm.client")
abm_requests = pytest.importorskip("pyaxm.abm_requests")
pyaxm_auth = pytest.importorskip("pyaxm.auth")
requests_adapters = pytest.importorskip("requests.adapters")

APPLE_HOSTS = ("account.apple.com", "api-business.apple.com", "api-school.apple.com")


class LocalApple(requests_adapters.HTTPAdapter):  # type: ignore[misc]
    """Sends what pyaxm addresses to Apple's hosts to mdmbot on 127.0.0.1 (plain HTTP), with
    the Host header Apple would see."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Rewrite the URL, keep the rest."""
        parts = urlsplit(request.url)
        if parts.hostname in APPLE_HOSTS:
            request.url = urlunsplit(
                ("http", f"127.0.0.1:{self.port}", parts.path, parts.query, "")
            )
            request.headers["Host"] = parts.hostname
        return super().send(request, **kwargs)


def pyaxm_for(port: ApplePort, client_id: str, key_id: str, key: Path, cache: Path) -> Any:
    """pyaxm's Client, built as its constructor builds it, with the adapter mounted on its
    session before the first request (the constructor fetches a token at once)."""
    client = pyaxm_client.Client.__new__(pyaxm_client.Client)
    client.abm = abm_requests.ABMRequests()
    adapter = LocalApple(int(urlsplit(port.url).port or 0))
    client.abm.session.mount("https://", adapter)
    client.abm.session.mount("http://", adapter)
    client.token_manager = pyaxm_auth.TokenManager(
        abm_requests=client.abm,
        axm_client_id=client_id,
        axm_key_id=key_id,
        key_path=str(key),
        token_path=str(cache),
    )
    return client


@pytest.fixture
def port(database_url: str, tmp_path: Path) -> Iterator[ApplePort]:
    # Links name Apple's host, as they would at Apple; the adapter maps it back here.
    with apple_port(
        database_url, tmp_path, mdmbot_dep_public_url="https://api-business.apple.com"
    ) as running:
        yield running


def test_pyaxm_walks_the_api(port: ApplePort, tmp_path: Path) -> None:
    jamf, mosyle = port.servers("Jamf", "Mosyle")
    serials = port.devices(2500)
    with port.ctx.unit_of_work() as session:
        inventory.assign_devices(session, OPERATOR, "Jamf", serials[:1200], port.clock())
    account = port.account("pyaxm", "business")  # pyaxm asks for scope business.api
    key = tmp_path / "key.pem"
    key.write_bytes(account.key_pem)
    client = pyaxm_for(port, account.client_id, account.key_id, key, tmp_path / "token.json")

    listed = client.list_mdm_servers()
    assert [(s.id, s.attributes.serverName) for s in listed] == [
        (f"{jamf:032X}", "Jamf"), (f"{mosyle:032X}", "Mosyle")
    ]  # fmt: skip
    devices = client.list_devices()  # 3 pages of at most 1000, following links.next
    assert [d.id for d in devices] == serials  # each serial exactly once, in order
    assert devices[0].attributes.status == "ASSIGNED"
    assert devices[0].attributes.addedToOrgDateTime.tzinfo is not None
    on_jamf = client.list_devices_in_mdm_server(f"{jamf:032X}")
    assert [d.id for d in on_jamf] == serials[:1200]

    device = client.get_device(serials[0])
    assert device.attributes.serialNumber == serials[0]
    assert client.get_device_server_assignment(serials[0]).id == f"{jamf:032X}"

    created = client.abm.assign_unassign_device_to_mdm_server(
        serials[2400:], f"{mosyle:032X}", "ASSIGN_DEVICES", client.token_manager.get_token_value()
    )
    assert created.data.attributes.status == "IN_PROGRESS"
    done = client._wait_for_device_activity_completion(
        created.data.id, initial_delay=0, poll_interval=1, max_retries=5
    )
    assert done.attributes.status == "COMPLETED"
    assert done.attributes.subStatus == "COMPLETED_WITH_SUCCESS"
    log = client.abm.session.get(done.attributes.downloadUrl)
    assert log.status_code == 200
    rows = list(csv.DictReader(io.StringIO(log.text)))
    assert [r["Serial Number"] for r in rows] == serials[2400:]
    assert client.get_device_server_assignment(serials[2450]).id == f"{mosyle:032X}"

    with pytest.raises(abm_requests.DeviceError, match="The specified resource doesn't exist"):
        client.get_device("NOSUCHSERIAL1")
