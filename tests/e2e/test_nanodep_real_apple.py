"""Apple mode against NanoDEP's real `depserver`: a sandbox mdmbot plays Apple and issues the
token for depserver's certificate; the school's mdmbot in Apple mode takes it in, records the
connection without fetching a new certificate, and installs the token into depserver, whose
proxy then reads `/account` from "Apple". Skipped unless MDMBOT_TEST_DEPSERVER names the binary.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.dep_client import dep_service
from tests.e2e.test_apple_mode import Apple, _apple_settings, apple  # noqa: F401
from tests.e2e.test_cli import Cli
from tests.e2e.test_nanodep_real import KEY, _nanodep, depserver, pytestmark  # noqa: F401
from tests.fakemdm import ALLOW_LOOPBACK


def test_a_token_from_apple_is_imported_and_installed_into_the_real_depserver(
    depserver: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    portal, school = Cli(tmp_path / "apple"), Cli(tmp_path / "school")
    school.env["MDMBOT_APPLE_API"] = "school"
    school.env["MDMBOT_MDM_ALLOW_NETWORKS"] = ALLOW_LOOPBACK
    portal.ok("db", "upgrade")
    school.ok("db", "upgrade")
    with dep_service(portal.data_dir) as apple_dep:
        status, pem = _nanodep(f"{depserver}/v1/tokenpki/school1?cn=school1&validity_days=365")
        assert status == 200 and pem.startswith(b"-----BEGIN CERTIFICATE-----"), pem
        for cli in (portal, school):
            (cli.work / "depserver.pem").write_bytes(pem)  # uploaded to Apple School Manager
        (portal.work / "portal").mkdir()
        portal.ok("server", "add", "school1", "--cert", "depserver.pem", "--out", "portal/")
        (token,) = (portal.work / "portal").glob("school1_Token_*_smime.p7m")

        school.ok("server", "add", "school1", "--cert", "depserver.pem", "--out", "local.p7m")
        said = school.ok("token", "import", "school1", str(token), "--actor", "U0ALICE")
        assert said.startswith(f"Took in {token.name} for “school1”"), said
        (school.work / "api.key").write_text(KEY)
        said = school.ok(
            "server", "connect", "school1", "--mdm", "nanodep", "--mdm-url", depserver,
            "--mdm-dep-name", "school1", "--mdm-api-key-file", "api.key",
            "--mdm-base-url", f"{apple_dep}/",
        )  # fmt: skip
        assert "Installed the active token for “school1” in NanoDEP (school1)" in said, said

        status, body = _nanodep(f"{depserver}/proxy/school1/account")
        assert status == 200, body
        assert json.loads(body)["server_name"] == "school1", "depserver talked to “Apple”"
        issued = portal.json("token", "list", "school1")[0]
        assert issued["installed_at"], "“Apple” saw depserver's /session with the token"
        shown = school.json("server", "show", "school1")
        assert shown["token_expires_at"] == issued["expires_at"], "depserver's answer"
        assert shown["install"]["status"] == "installed"
        assert (shown["downloaded_by"], shown["token_source"]) == ("U0ALICE", "apple")


def test_in_use_after_depservers_session_and_a_sync(
    depserver: str,  # noqa: F811 (the fixture)
    apple: Apple,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    status, pem = _nanodep(f"{depserver}/v1/tokenpki/school1?cn=school1&validity_days=365")
    assert status == 200, pem
    (apple.cli.work / "depserver.pem").write_bytes(pem)
    (apple.cli.work / "portal").mkdir()
    apple.cli.ok("server", "add", "school1", "--cert", "depserver.pem", "--out", "portal/")
    (token,) = (apple.cli.work / "portal").glob("school1_Token_*_smime.p7m")
    school = Cli(tmp_path / "school")
    school.env.update(_apple_settings(apple), MDMBOT_MDM_ALLOW_NETWORKS=ALLOW_LOOPBACK)
    school.ok("db", "upgrade")
    assert school.json("apple", "sync", "--json")["servers"] == 3
    said = school.ok("token", "import", "school1", str(token), "--actor", "U0ALICE")
    assert said.startswith(f"Took in {token.name} for “school1”"), "no certificate to check"
    (school.work / "api.key").write_text(KEY)
    said = school.ok(
        "server", "connect", "school1", "--mdm", "nanodep", "--mdm-url", depserver,
        "--mdm-dep-name", "school1", "--mdm-api-key-file", "api.key",
        "--mdm-base-url", f"{apple.origin}/",
    )  # fmt: skip
    assert "Installed the active token" in said, said
    assert "in use" not in school.ok("server", "show", "school1")
    status, body = _nanodep(f"{depserver}/proxy/school1/account")
    assert status == 200 and json.loads(body)["server_name"] == "school1", body
    school.ok("apple", "sync", "--json")
    shown = school.json("server", "show", "school1")
    assert shown["apple"]["last_connected_at"], "Apple saw depserver's /session"
    assert shown["token_installed_at"] and shown["token_source"] == "apple"
    assert "in use since" in school.ok("server", "show", "school1")
