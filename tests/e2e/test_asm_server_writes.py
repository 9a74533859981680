"""POST, PATCH and DELETE /v1/mdmServers for an Apple Business API account, through the real
Apple-port listener: mdmbot's usual rules, and what `server show` then sees."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from core.devices import inventory
from core.tokens import servers
from tests.asm_support import ApplePort, apple_port
from tests.devices_support import OPERATOR, serial
from tests.integration import rsa_cert


@pytest.fixture
def port(database_url: str, tmp_path: Path) -> Iterator[ApplePort]:
    with apple_port(database_url, tmp_path) as running:
        yield running


def _der_b64() -> str:
    der = x509.load_pem_x509_certificate(rsa_cert(0).pem).public_bytes(Encoding.DER)
    return base64.b64encode(der).decode()


def _create(name: str, **attributes: object) -> dict[str, object]:
    return {"data": {"type": "mdmServers", "attributes": {
        "serverName": name, "serverCertificate": {"name": "mdm.cer", "data": _der_b64()},
        **attributes,
    }}}  # fmt: skip


def test_create_change_and_delete_a_server(port: ApplePort) -> None:
    token = port.token(port.account("Terraform", "business"))
    status, _, created = port.call(
        "POST", "/v1/mdmServers", token=token, body=_create("Marketing MDM")
    )
    assert status == 201, created
    key, attributes = created["data"]["id"], created["data"]["attributes"]
    assert attributes["serverName"] == "Marketing MDM" and attributes["enableMdmDisownFlag"]
    assert attributes["deviceCount"] == 0 and attributes["status"] == "ACTIVE"
    with port.ctx.unit_of_work(readonly=True) as session:
        view = servers.get_server_view(session, "marketing mdm")
    assert view.token_id is None  # as at Apple: no token until one is asked for

    clash = port.call("POST", "/v1/mdmServers", token=token, body=_create("MARKETING  mdm"))
    assert clash[0] == 409 and "already exists" in clash[2]["errors"][0]["detail"]
    reserved = port.call("POST", "/v1/mdmServers", token=token, body=_create("Unassigned"))
    assert reserved[0] == 409
    bad_cert = _create("Other")
    bad_cert["data"]["attributes"]["serverCertificate"]["data"] = "bm90IGEgY2VydA=="  # type: ignore[index]
    assert port.call("POST", "/v1/mdmServers", token=token, body=bad_cert)[0] == 409

    patch = {"data": {"type": "mdmServers", "id": key, "attributes": {
        "serverName": "Marketing (renamed)", "enableMdmDisownFlag": False,
        "defaultProductFamilies": ["IPAD", "MAC"],
    }}}  # fmt: skip
    status, _, changed = port.call("PATCH", f"/v1/mdmServers/{key}", token=token, body=patch)
    assert status == 200, changed
    attributes = changed["data"]["attributes"]
    assert attributes["serverName"] == "Marketing (renamed)"
    assert attributes["enableMdmDisownFlag"] is False
    assert attributes["defaultProductFamilies"] == ["IPAD", "MAC"]
    with port.ctx.unit_of_work(readonly=True) as session:
        assert dict(inventory.list_defaults(session))["Mac"] == "Marketing (renamed)"
    clear = {"data": {"type": "mdmServers", "id": key,
                      "attributes": {"defaultProductFamilies": []}}}  # fmt: skip
    status, _, cleared = port.call("PATCH", f"/v1/mdmServers/{key}", token=token, body=clear)
    assert status == 200 and cleared["data"]["attributes"]["defaultProductFamilies"] == []

    port.devices(1)
    with port.ctx.unit_of_work() as session:
        inventory.assign_devices(
            session, OPERATOR, "Marketing (renamed)", [serial(0)], port.clock()
        )
    status, _, busy = port.call("DELETE", f"/v1/mdmServers/{key}", token=token)
    assert status == 409 and "unassign them first" in busy["errors"][0]["detail"]
    with port.ctx.unit_of_work() as session:
        inventory.unassign_devices(session, OPERATOR, [serial(0)], port.clock())
    status, _, body = port.call("DELETE", f"/v1/mdmServers/{key}", token=token)
    assert (status, body) == (204, "")
    assert port.call("GET", f"/v1/mdmServers/{key}", token=token)[0] == 404
