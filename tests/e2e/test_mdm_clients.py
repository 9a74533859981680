"""The MDM clients (bot/mdm) against NanoDEP- and Fleet-shaped fakes and a real script: what they
send, and the one line each fault becomes."""

from __future__ import annotations

import json
import re
import stat
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.connections.links import ConnectionSpec, InstallError, TokenPush, make_spec
from core.tokens.certificates import load_certificate
from core.tokens.token_file import build_token_file, generate_credentials
from tests.fakemdm import NANODEP_KEY as KEY
from tests.fakemdm import FakeFleet, FakeNanoDep
from tests.fakemdm import installer as mdm_installer
from tests.integration import rsa_cert


@pytest.fixture
def fleet() -> Iterator[FakeFleet]:
    """A running Fleet-shaped fake."""
    fake = FakeFleet("fleet-api-token").start()
    yield fake
    fake.stop()


def _spec(fake: FakeNanoDep, **changes: str | None) -> ConnectionSpec:
    values: dict[str, str | None] = {
        "url": fake.url,
        "dep_name": "school1",
        "api_key": KEY,
        "base_url": "https://mdmbot.example.org:8443/",
    }
    values.update(changes)
    return make_spec("nanodep", **values)  # type: ignore[arg-type]


def _token_for(pem: bytes, consumer_key: str | None = None) -> tuple[TokenPush, str, str]:
    now = datetime.now(UTC)
    creds = generate_credentials(now, consumer_key)
    cert = load_certificate(pem, now=now).certificate
    push = TokenPush("school1", "school1_Token.p7m", build_token_file(creds, cert))
    return push, creds.consumer_key, creds.access_token


def test_nanodep_certificate_token_and_config(nanodep: FakeNanoDep) -> None:
    installer = mdm_installer(timeout=5)
    spec = _spec(nanodep)
    pem = installer.fetch_certificate(spec, "School One")
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert nanodep.calls[0].query == {"cn": ["School One"], "validity_days": ["365"]}
    key = None
    for _ in range(3):
        push, key, access = _token_for(pem, key)
        answer = installer.install(spec, push)
        assert answer.remote_id is None and answer.expires_at is not None
        expiry = nanodep.tokens["school1"]["access_token_expiry"]
        assert f"{answer.expires_at:%Y-%m-%dT%H:%M:%SZ}" == expiry, "NanoDEP answers it"
        assert nanodep.tokens["school1"]["access_token"] == access
    assert [c.query for c in nanodep.calls if c.method == "PUT"] == [{}] * 6, "never force"
    assert nanodep.configs["school1"] == {"base_url": "https://mdmbot.example.org:8443"}

    other, _, _ = _token_for(pem)
    with pytest.raises(InstallError) as refused:
        installer.install(spec, other)
    assert refused.value.message == (
        "500 from NanoDEP (school1): mismatched consumer key — it holds a token with another "
        "consumer key under this DEP name, which mdmbot did not install there through this "
        "connection (another server's?); mdmbot replaces only its own."
    )


@pytest.mark.parametrize(
    "fault",
    ["down", "slow", "401", "500", "wrong DEP name", "TLS", "not decryptable"],
)
def test_each_nanodep_fault_is_one_line(nanodep: FakeNanoDep, fault: str) -> None:
    installer = mdm_installer(timeout=0.5)
    spec = _spec(nanodep)
    push, _, _ = _token_for(mdm_installer(timeout=10).fetch_certificate(spec, "school1"))
    expected = {
        "down": "Cannot reach NanoDEP (school1) at 127.0.0.1: Connection refused.",
        "slow": "NanoDEP (school1) did not answer within 0.5 s.",
        "401": "401 from NanoDEP (school1) — check the API key.",
        "500": "500 from NanoDEP (school1): database is locked.",
        "wrong DEP name": (
            "NanoDEP has no DEP name “school2” ready for a token (open db/school2.tokenpki."
            "staging.pem: no such file or directory); check --mdm-dep-name."
        ),
        "TLS": "TLS failure with NanoDEP (school1) at 127.0.0.1: self-signed certificate; if it "
        "uses a private CA, name its bundle in MDMBOT_MDM_CA_BUNDLE.",
        "not decryptable": "500 from NanoDEP (school1): decrypting token:",
    }[fault]
    if fault == "down":
        nanodep.stop()
    elif fault == "slow":
        nanodep.delay = 1.5
    elif fault == "401":
        spec = _spec(nanodep, api_key="wrong")
    elif fault == "500":
        nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    elif fault == "wrong DEP name":
        spec = _spec(nanodep, dep_name="school2")
    elif fault == "TLS":
        tls = FakeNanoDep(KEY, tls=True).start()
        spec = _spec(tls)  # type: ignore[arg-type]
    else:
        push = TokenPush("school1", "x.p7m", b"Content-Type: x\n\nnot base64 at all")
    with pytest.raises(InstallError) as refused:
        installer.install(spec, push)
    assert refused.value.message.startswith(expected), refused.value.message
    assert "\n" not in refused.value.message and KEY not in refused.value.message
    if fault == "TLS":
        tls.stop()


def test_a_named_ca_bundle_makes_a_private_certificate_trusted(tmp_path: Path) -> None:
    tls = FakeNanoDep(KEY, tls=True).start()
    try:
        assert tls.tls_cert is not None
        (tmp_path / "ca.pem").write_bytes(tls.tls_cert.pem)
        installer = mdm_installer(timeout=5, ca_bundle=str(tmp_path / "ca.pem"))
        spec = _spec(tls)  # type: ignore[arg-type]
        push, _, access = _token_for(installer.fetch_certificate(spec, "school1"))
        installer.install(spec, push)
        assert tls.tokens["school1"]["access_token"] == access
        missing = mdm_installer(timeout=5, ca_bundle=str(tmp_path / "nope.pem"))
        with pytest.raises(InstallError, match="Cannot read the CA bundle"):
            missing.install(spec, push)
    finally:
        tls.stop()


def test_fleet_uploads_then_renews_the_same_abm_token(fleet: FakeFleet) -> None:
    installer = mdm_installer(timeout=5)
    spec = make_spec("fleet", url=fleet.url, api_key="fleet-api-token")
    pem = installer.fetch_certificate(spec, "Fleet")
    push, key, _ = _token_for(pem)
    answer = installer.install(spec, push)
    token_id = answer.remote_id
    assert token_id == "1" and [c.method for c in fleet.calls] == ["GET", "POST"]
    renew_date = fleet.tokens[1]["access_token_expiry"]
    assert answer.expires_at is not None, "Fleet answers the token's renew date"
    assert f"{answer.expires_at:%Y-%m-%dT%H:%M:%SZ}" == renew_date
    renewed = ConnectionSpec(**{**spec.__dict__, "remote_id": token_id})
    push, _, access = _token_for(pem, key)
    assert installer.install(renewed, push).remote_id == "1"
    assert fleet.calls[-1].path == "/api/latest/fleet/abm_tokens/1/renew"
    assert fleet.tokens[1]["access_token"] == access and len(fleet.tokens) == 1

    gone = ConnectionSpec(**{**spec.__dict__, "remote_id": "7"})
    again = installer.install(gone, push).remote_id
    assert again == "2", "a token deleted in Fleet is uploaded again"

    wrong = ConnectionSpec(**{**spec.__dict__, "api_key": "nope"})
    with pytest.raises(InstallError) as refused:
        installer.install(wrong, push)
    assert refused.value.message == "401 from Fleet (127.0.0.1) — check the API key."
    stranger, _, _ = _token_for(_other_pem())
    with pytest.raises(InstallError) as refused:
        installer.install(spec, stranger)
    assert refused.value.message == (
        "400 from Fleet (127.0.0.1): Invalid token. Please provide a valid token from Apple "
        "Business Manager."
    )


def _other_pem() -> bytes:
    return rsa_cert(3).pem


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "install-token.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_command_gets_the_file_and_the_server_name(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = _script(
        tmp_path,
        f'cp "$MDMBOT_TOKEN_FILE" {seen}.p7m\n'
        f'printf "%s|%s|%s" "$MDMBOT_SERVER_NAME" "$1" "${{MDMBOT_SECRET_KEY:-none}}" > {seen}\n',
    )
    spec = make_spec("command", command=f"{script} 'first arg'")
    push, _, _ = _token_for(_other_pem())
    assert mdm_installer(timeout=5).install(spec, push).remote_id is None
    assert seen.read_text() == "school1|first arg|none", "no shell, no mdmbot secrets"
    assert (tmp_path / "seen.p7m").read_bytes() == push.content


def test_command_failures_are_one_line(tmp_path: Path) -> None:
    push, _, _ = _token_for(_other_pem())
    failing = _script(tmp_path, 'echo "uploading…" ; echo "Jamf said 401" >&2 ; exit 3\n')
    cases = {
        str(failing): "The install command install-token.sh exited 3: Jamf said 401.",
        str(tmp_path / "missing.sh"): "Cannot run the install command missing.sh: not found.",
        "sleep 5": "The install command sleep ran over 0.5 s.",
    }
    for command, message in cases.items():
        with pytest.raises(InstallError) as refused:
            mdm_installer(timeout=0.5).install(make_spec("command", command=command), push)
        assert refused.value.message == message
    with pytest.raises(InstallError, match="cannot fetch"):
        mdm_installer().fetch_certificate(make_spec("command", command="true"), "x")


def test_connections_are_checked_before_anything_is_stored() -> None:
    cases = {
        ("nanodep", "ftp://x", "d", "k"): "--mdm-url must be an http(s) URL",
        ("fleet", "https://x/a b", None, "k"): "--mdm-url must be an http(s) URL",
        ("fleet", "https://x/\r\nX: y", None, "k"): "--mdm-url must be an http(s) URL",
        ("fleet", "https://x", None, "k\ney"): "The API key is one line without spaces",
        ("nanodep", "https://x", None, "k"): "A NanoDEP connection needs its DEP name",
        ("nanodep", "https://x", "a/b", "k"): "A NanoDEP connection needs its DEP name",
        ("fleet", "https://x", None, " "): "A Fleet connection needs an API key",
        ("jamf", "https://x", None, "k"): "Unknown MDM kind “jamf”",
    }
    for (kind, url, dep, key), message in cases.items():
        with pytest.raises(Exception, match=re.escape(message)):
            make_spec(kind, url=url, dep_name=dep, api_key=key)
    with pytest.raises(Exception, match="1 to 180 days"):
        make_spec("command", command="true", auto_renew_days=181)
    spec = make_spec("nanodep", url="https://n.example/", dep_name="d", api_key="SECRET")
    assert "SECRET" not in repr(spec) and json.dumps(spec.label()) == '"NanoDEP (d)"'


def _alive(pid: int) -> bool:
    """Whether the process still runs 2 s on (a killed one may take a moment to die)."""
    for _ in range(40):
        try:
            if "zombie" in Path(f"/proc/{pid}/status").read_text():
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return True


def test_command_leaves_nothing_running_and_keeps_only_the_end_of_its_output(
    tmp_path: Path,
) -> None:
    push, _, _ = _token_for(_other_pem())
    pids = tmp_path / "pids"
    started = time.monotonic()
    daemon = _script(tmp_path, f"sleep 30 &\necho $! > {pids}\necho installed\n")
    answer = mdm_installer(timeout=5).install(make_spec("command", command=str(daemon)), push)
    assert answer.remote_id is None and answer.expires_at is None
    assert time.monotonic() - started < 3, "not held until what it started ends"
    assert not _alive(int(pids.read_text())), "what it started is killed with it"

    overrun = _script(tmp_path, f"sleep 30 &\necho $! > {pids}\nsleep 30\n")
    with pytest.raises(InstallError, match=re.escape("ran over 0.5 s")):
        mdm_installer(timeout=0.5).install(make_spec("command", command=str(overrun)), push)
    assert not _alive(int(pids.read_text()))

    noisy = _script(
        tmp_path,
        "head -c 30000000 /dev/zero | tr '\\0' x\necho\necho 'Jamf said 401' >&2\nexit 2\n",
    )
    tracemalloc.start()
    try:
        with pytest.raises(InstallError) as refused:
            mdm_installer(timeout=20).install(make_spec("command", command=str(noisy)), push)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.message == "The install command install-token.sh exited 2: Jamf said 401."
    assert peak < 2_000_000, f"{peak} bytes held for 30 MB of output"
