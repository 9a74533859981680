"""`mdmbot token import` through the command line process: a sandbox mdmbot plays Apple and
issues the token file; the school's mdmbot in Apple mode takes it in (and installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.connections.links import make_spec
from tests import certs
from tests.e2e.test_cli import Cli, _valid_now
from tests.fakemdm import ALLOW_LOOPBACK, NANODEP_KEY, FakeNanoDep, decrypt_token
from tests.fakemdm import installer as mdm_installer


def _apple_and_school(tmp_path: Path) -> tuple[Cli, Cli]:
    apple, school = Cli(tmp_path / "apple"), Cli(tmp_path / "school")
    school.env["MDMBOT_APPLE_API"] = "school"
    school.env["MDMBOT_MDM_ALLOW_NETWORKS"] = ALLOW_LOOPBACK
    apple.ok("db", "upgrade")
    school.ok("db", "upgrade")
    return apple, school


def _issue_at_apple(apple: Cli, name: str, cert: bytes) -> Path:
    """The token file Apple's portal would give for a server with this certificate."""
    (apple.work / f"{name}.pem").write_bytes(cert)
    out = apple.work / name
    out.mkdir()
    apple.ok("server", "add", name, "--cert", f"{name}.pem", "--out", f"{name}/")
    (found,) = out.glob("*_smime.p7m")
    return found


def test_import_takes_the_token_in_and_refuses_another_certificate(tmp_path: Path) -> None:
    apple, school = _apple_and_school(tmp_path)
    mine, other = _valid_now(0, "mdm.example.edu"), _valid_now(3, "other.example.edu")
    (school.work / "mine.pem").write_bytes(mine.pem)
    school.ok("server", "add", "School One", "--cert", "mine.pem", "--out", "first.p7m")
    good = _issue_at_apple(apple, "School One", mine.pem)
    stranger = _issue_at_apple(apple, "Other", other.pem)

    refused = school.run("token", "import", "School One", str(stranger), "--actor", "U0ALICE")
    assert refused.returncode == 1 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "encrypted to another certificate" in refused.stderr
    (school.work / "notes.p7m").write_text("not a token\n")
    refused = school.run("token", "import", "School One", "notes.p7m")
    assert refused.returncode == 1 and "is not a server token" in refused.stderr
    assert school.json("token", "list") == [], "nothing changed"

    said = school.ok("token", "import", "School One", str(good), "--actor", "U0ALICE")
    assert said.startswith(f"Took in {good.name} for “School One”: it is the active token")
    tokens = school.json("token", "list", "School One")
    assert [t["status"] for t in tokens] == ["active"]
    (apple.work / "renewed").mkdir()
    apple.ok("token", "issue", "School One", "--out", "renewed/")
    (renewed,) = (apple.work / "renewed").glob("*_smime.p7m")
    school.ok("token", "import", "School One", str(renewed), "--actor", "U0ALICE")
    tokens = school.json("token", "list", "School One")
    assert [t["status"] for t in tokens] == ["active", "superseded"]
    shown = school.json("server", "show", "School One")
    assert shown["downloaded_by"] == "U0ALICE" and shown["token_source"] == "apple"
    issued = apple.json("token", "list", "School One")[0]
    assert shown["token_expires_at"] == issued["expires_at"], "one year after Apple's file name"
    assert shown["apple"] == {"id": None, "last_connected_at": None}, "not linked by a sync yet"
    again = school.run("token", "import", "School One", str(renewed))
    assert again.returncode == 1 and "already taken in" in again.stderr


def test_import_is_refused_in_the_sandbox(tmp_path: Path) -> None:
    apple, _ = _apple_and_school(tmp_path)
    token = _issue_at_apple(apple, "School One", _valid_now(0, "mdm.example.edu").pem)
    refused = apple.run("token", "import", "School One", str(token))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "mdmbot: `token import` takes in tokens downloaded from Apple School Manager or Apple "
        "Business, in Apple mode only (MDMBOT_APPLE_API); here mdmbot issues them itself: "
        "`mdmbot token issue NAME`."
    ]


@pytest.mark.parametrize(("api", "portal"), [("school", "Apple School Manager"),
                                             ("business", "Apple Business")])  # fmt: skip
def test_import_refusals_name_the_portal_of_the_mode(tmp_path: Path, api: str, portal: str) -> None:
    apple, school = _apple_and_school(tmp_path)
    mine, other = _valid_now(0, "mdm.example.edu"), _valid_now(3, "other.example.edu")
    (school.work / "mine.pem").write_bytes(mine.pem)
    school.ok("server", "add", "School One", "--cert", "mine.pem")  # Apple School Manager's way
    school.env["MDMBOT_APPLE_API"] = api
    stranger = _issue_at_apple(apple, "Other", other.pem)
    (school.work / "notes.p7m").write_text("not a token\n")
    said = [
        school.run("token", "import", "School One", str(stranger)).stderr,
        school.run("token", "import", "School One", "notes.p7m").stderr,
        school.run("token", "issue", "School One").stderr,
    ]
    assert f"Download the token of this server in {portal}," in said[0]
    assert f"is not a server token from {portal} (an S/MIME" in said[1]
    assert f"download the server's token in {portal} (Preferences" in said[2]
    assert all(api == "school" or "School Manager" not in text for text in said), said


def test_connect_in_apple_mode_keeps_the_certificate_then_import_installs(tmp_path: Path) -> None:
    apple, school = _apple_and_school(tmp_path)
    nanodep = FakeNanoDep().start()
    try:
        (school.work / "api.key").write_text(NANODEP_KEY)
        connection = ("--mdm", "nanodep", "--mdm-url", nanodep.url, "--mdm-dep-name", "school1",
                      "--mdm-api-key-file", "api.key")  # fmt: skip
        spec = make_spec("nanodep", url=nanodep.url, dep_name="school1", api_key=NANODEP_KEY)
        (school.work / "nanodep.pem").write_bytes(
            mdm_installer().fetch_certificate(spec, "School One")
        )  # the certificate uploaded to Apple School Manager when the server was linked
        school.ok("server", "add", "School One", "--cert", "nanodep.pem", "--out", "x.p7m")
        cert, key = nanodep.staged["school1"]
        token = _issue_at_apple(apple, "School One", certs.cert_pem(cert))
        said = school.ok("token", "import", "School One", str(token), "--actor", "U0BOB")
        assert said.startswith("Took in"), "not connected yet: the file is the person's"
        school.env["MDMBOT_DEP_PUBLIC_URL"] = "https://dep.school.example"  # the sandbox's
        said = school.ok("server", "connect", "School One", *connection)
        assert said.startswith("Connected “School One” to NanoDEP (school1).")
        assert nanodep.configs["school1"] == {"base_url": "https://mdmenrollment.apple.com"}
        assert "Installed the active token" in said
        assert nanodep.staged["school1"] == (cert, key), "no new key pair drawn at NanoDEP"
        assert nanodep.tokens["school1"] == decrypt_token(token.read_bytes(), cert, key)

        (apple.work / "renewed").mkdir()
        apple.ok("token", "issue", "School One", "--out", "renewed/")
        (renewed,) = (apple.work / "renewed").glob("*_smime.p7m")
        said = school.ok("token", "import", "School One", str(renewed), "--actor", "U0BOB")
        assert said.startswith("Took in the token for “School One” and installed it in NanoDEP")
        assert nanodep.tokens["school1"] == decrypt_token(renewed.read_bytes(), cert, key)
        shown = school.json("server", "show", "School One")
        assert shown["install"]["status"] == "installed" and shown["downloaded_by"] == "U0BOB"
        assert shown["token_expires_at"] == nanodep.tokens["school1"]["access_token_expiry"]

        fetched = school.ok("server", "connect", "School One", *connection, "--fetch-certificate")
        assert "replace the server's certificate in Apple School Manager" in fetched
        assert "-----BEGIN CERTIFICATE-----" in fetched
        assert nanodep.staged["school1"][0] != cert, "a new key pair, as NanoDEP does"
        stale = _issue_at_apple(apple, "Old", certs.cert_pem(cert))
        refused = school.run("token", "import", "School One", str(stale))
        assert refused.returncode == 1 and "another certificate" not in refused.stderr, (
            "NanoDEP's certificates share issuer and serial: only its answer tells them apart"
        )
        assert "could not be installed" in refused.stderr
        said = school.ok("server", "connect", "School One", *connection, "--fetch-certificate",
                         "--out", "for-apple.pem")  # fmt: skip
        assert "written to for-apple.pem" in said and "BEGIN CERTIFICATE" not in said
        written = (school.work / "for-apple.pem").read_bytes()
        assert written == certs.cert_pem(nanodep.staged["school1"][0])
    finally:
        nanodep.stop()
