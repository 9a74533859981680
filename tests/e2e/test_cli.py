"""The real `mdmbot` console script, run in a subprocess with a clean environment.

Each call costs about a second (interpreter start-up and imports), so the success flow is one
test and the refusals run side by side in one module fixture, then are checked case by case.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from core.tokens.token_file import add_one_year, parse_content
from tests import certs
from tests.integration import wide
from tests.processes import run_cli

_SCRIPT = Path(sys.executable).parent / "mdmbot"
MDMBOT = [str(_SCRIPT)] if _SCRIPT.exists() else [shutil.which("mdmbot") or "mdmbot"]
SECRET_PREFIXES = ("CK_", "CS_", "AT_", "AS_")


def _valid_now(index: int, subject: str) -> certs.CertAndKey:
    """An RSA certificate valid today (the CLI runs on the real clock)."""
    key = certs.rsa_key(2048, index)
    start = datetime.now(UTC) - timedelta(days=1)
    return certs.CertAndKey(
        certs.build_certificate(key.public_key(), key, subject=subject, not_before=start), key
    )


KEY_CREATED = "WARNING mdmbot.vault: Created a new secret key file "


@dataclass
class Cli:
    """An operator's shell: a data directory, a clean environment and a working directory."""

    home: Path
    database_url: str | None = None
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MDMBOT_", "SLACK_"))}
        self.env["MDMBOT_DATA_DIR"] = str(self.data_dir)
        if self.database_url:
            self.env["MDMBOT_DATABASE_URL"] = self.database_url
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def data_dir(self) -> Path:
        """MDMBOT_DATA_DIR."""
        return self.home / "data"

    @property
    def work(self) -> Path:
        """The directory commands run in (no `.env` there)."""
        return self.home / "work"

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `mdmbot ARGS`; never a traceback, whatever the outcome."""
        # stdin is no terminal: commands that ask at one act at once
        result = run_cli(list(args), env=self.env, cwd=cwd or self.work)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        """Run a command that must succeed silently on stderr; return its stdout."""
        result = self.run(*args, cwd=cwd)
        said = [line for line in result.stderr.splitlines() if not line.startswith(KEY_CREATED)]
        assert (result.returncode, said) == (0, []), (args, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        """Run a `--json` command and parse what it prints."""
        return json.loads(self.ok(*args, "--json"))


def decrypt(token_file: Path, key: certs.CertAndKey, tmp: Path) -> bytes:
    """`openssl smime -decrypt -in FILE -inkey KEY`, as the MDM server's operator runs it."""
    key_file = tmp / f"key-{id(key)}.pem"
    key_file.write_bytes(key.key_pem)
    result = subprocess.run(
        ["openssl", "smime", "-decrypt", "-in", str(token_file), "-inkey", str(key_file)],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _expiry_printed(stdout: str) -> str:
    """The expiry in `Wrote FILE for “NAME”; it expires 2027-…Z. Upload it…`."""
    return stdout.split("it expires ", 1)[1].split(".", 1)[0]


def test_the_operator_flow(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    first, second = _valid_now(0, "jamf.example.edu"), _valid_now(3, "new.example.edu")
    (cli.work / "jamf.pem").write_bytes(first.pem)
    (cli.work / "new.der").write_bytes(second.der)

    assert cli.ok("db", "upgrade").startswith("Created the mdmbot tables (schema revision ")
    started = datetime.now(UTC).replace(microsecond=0)
    # server add: the token file lands in the working directory, readable by its owner only.
    out = cli.ok("server", "add", "  Jamf   Pro ", "--cert", "jamf.pem", "--actor", "U0AAA")
    [token_file] = list(cli.work.glob("*_smime.p7m"))
    assert token_file.name.startswith("Jamf_Pro_Token_")
    assert f"Wrote {token_file.name} for “Jamf Pro”" in out
    assert token_file.stat().st_mode & 0o777 == 0o600
    content = decrypt(token_file, first, tmp_path)
    assert content.startswith(b"Content-Type: text/plain;charset=UTF-8\r\n")
    fields = parse_content(content)
    assert fields["access_token_expiry"] == _expiry_printed(out)
    expiry = datetime.fromisoformat(fields["access_token_expiry"].replace("Z", "+00:00"))
    assert started <= expiry - (add_one_year(started) - started) <= datetime.now(UTC)
    # Works out of the box: SQLite and a 0600 key file in the data directory.
    assert (cli.data_dir / "mdmbot.db").exists()
    assert (cli.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600

    [listed] = cli.json("server", "list")
    assert listed["name"] == "Jamf Pro"
    assert (listed["release_devices"], listed["state"], listed["downloaded_by"]) == (
        True,
        "ok",
        "U0AAA",
    )
    assert listed["token_expires_at"] == fields["access_token_expiry"]
    assert listed["days_left"] in (364, 365)

    out = cli.ok("server", "edit", "jamf pro", "--rename", "Jamf School", "--no-release-devices")
    assert out == "Renamed “Jamf Pro” to “Jamf School”; release devices not allowed.\n"
    shown = cli.json("server", "show", wide("JAMF") + " school")
    assert (shown["name"], shown["release_devices"]) == ("Jamf School", False)
    assert shown["certificate_subject"] == "CN=jamf.example.edu"

    out = cli.ok("token", "issue", "Jamf School", "--out", "second.p7m")
    assert "Wrote second.p7m for “Jamf School”; it expires " in out
    second_fields = parse_content(decrypt(cli.work / "second.p7m", first, tmp_path))
    assert second_fields["consumer_key"] == fields["consumer_key"], "kept across renewals"
    for secret in ("consumer_secret", "access_token", "access_secret"):
        assert second_fields[secret] != fields[secret]
    assert second_fields["access_token_expiry"] == _expiry_printed(out)

    out = cli.ok(
        "cert",
        "replace",
        "jamf school",
        "--cert",
        "new.der",
        "--out",
        "third.p7m",
        "--actor",
        "U0BBB",
    )
    assert "Wrote third.p7m for “Jamf School”" in out
    third_fields = parse_content(decrypt(cli.work / "third.p7m", second, tmp_path))
    assert third_fields["access_token_expiry"] == _expiry_printed(out)

    assert cli.ok("roles", "grant", "U0SITE", "site", "manager") == "U0SITE is now Site Manager.\n"
    cli.ok("roles", "grant", "U0ADMIN", "Administrator")
    assert cli.ok("roles", "revoke", "U0SITE") == "U0SITE is no longer Site Manager.\n"
    holders = cli.json("roles", "list")
    assert [(h["slack_id"], h["role"]) for h in holders] == [("U0ADMIN", "Administrator")]

    out = cli.ok("server", "remove", "Jamf School")
    assert "Removed “Jamf School”; its token is revoked." in out
    # The name is free again.
    cli.ok("server", "add", "JAMF SCHOOL", "--cert", "jamf.pem", "--out", "again.p7m")
    [relinked] = cli.json("server", "list")
    assert relinked["name"] == "JAMF SCHOOL" and relinked["id"] != listed["id"]
    assert relinked["release_devices"] is True

    raw = cli.ok("token", "list", "--json")
    tokens = json.loads(raw)
    assert [(t["server_name"], t["status"], t["reason"], t["downloaded_by"]) for t in tokens] == [
        ("JAMF SCHOOL", "active", None, getpass.getuser()),  # no --actor: the operator's login
        ("Jamf School", "revoked", "server removed", "U0BBB"),
        ("Jamf School", "superseded", "certificate replaced", getpass.getuser()),
        ("Jamf School", "superseded", "new token", "U0AAA"),
    ]
    assert len({t["certificate_fingerprint"] for t in tokens}) == 2
    for prefix in SECRET_PREFIXES:
        assert prefix not in raw
    stored = b"".join(p.read_bytes() for p in cli.data_dir.glob("mdmbot.db*"))
    for issued in (fields, second_fields, third_fields):
        for secret in ("consumer_secret", "access_token", "access_secret"):
            assert issued[secret].encode() not in stored  # encrypted at rest

    assert cli.ok("db", "upgrade").startswith("Nothing to do: the schema is already at revision")


# --- refusals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One bad input and the words its one-line refusal must contain."""

    args: tuple[str, ...]
    says: str


ADD = ("server", "add")
REFUSALS: dict[str, Refusal] = {
    "reserved name": Refusal((*ADD, "Unassigned", "--cert", "good.pem"), "Apple reserves it"),
    "duplicate": Refusal((*ADD, "Jamf", "--cert", "good.pem"), "already exists"),
    "duplicate case": Refusal((*ADD, "jAMF", "--cert", "good.pem"), "already exists"),
    "duplicate width": Refusal((*ADD, wide("JAMF"), "--cert", "good.pem"), "already exists"),
    "empty name": Refusal((*ADD, "", "--cert", "good.pem"), "Enter a server name"),
    "over-long name": Refusal((*ADD, "x" * 65, "--cert", "good.pem"), "at most 64 characters"),
    "unknown show": Refusal(("server", "show", "Nope"), "no MDM server called “Nope”"),
    "unknown token": Refusal(("token", "issue", "Nope", "--out", "t.p7m"), "no MDM server"),
    "random bytes": Refusal((*ADD, "New", "--cert", "random.bin"), "not a public key certificate"),
    "truncated DER": Refusal(
        (*ADD, "New", "--cert", "truncated.der"), "not a public key certificate"
    ),
    "HTML": Refusal((*ADD, "New", "--cert", "page.html"), "looks like a web page"),
    "private key": Refusal((*ADD, "New", "--cert", "key.pem"), "This is a private key"),
    "CSR": Refusal((*ADD, "New", "--cert", "request.pem"), "certificate signing request"),
    "EC certificate": Refusal((*ADD, "New", "--cert", "ec.pem"), "its key is an EC key"),
    "DSA certificate": Refusal((*ADD, "New", "--cert", "dsa.pem"), "its key is a DSA key"),
    "RSA 1024": Refusal((*ADD, "New", "--cert", "rsa1024.pem"), "too short (1024 bits)"),
    "over 64 KiB": Refusal((*ADD, "New", "--cert", "big.pem"), "64 KiB"),
    "missing file": Refusal((*ADD, "New", "--cert", "missing.pem"), "Cannot read"),
    "actor not a user id": Refusal(
        ("token", "issue", "Jamf", "--out", "t.p7m", "--actor", "alice"),
        "“alice” is not a Slack user id",
    ),
    "replace with EC": Refusal(
        ("cert", "replace", "Jamf", "--cert", "ec.pem", "--out", "t.p7m"), "its key is an EC key"
    ),
}


def _write_bad_files(directory: Path) -> None:
    good = _valid_now(0, "jamf.example.edu")
    rng = random.Random(2)
    files = {
        "good.pem": good.pem,
        "random.bin": rng.randbytes(1500),
        "truncated.der": good.der[: len(good.der) // 2],
        "page.html": b"<!DOCTYPE html>\n<html><head><title>Sign in | Slack</title></head></html>\n",
        "key.pem": good.key_pem,
        "request.pem": certs.csr_pem(),
        "ec.pem": certs.ec_cert().pem,
        "dsa.pem": certs.dsa_cert().pem,
        "rsa1024.pem": certs.rsa_1024().pem,
        "big.pem": good.pem + b"# padding\n" * 6600,
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)


@dataclass
class RefusalRun:
    """What each refusal printed, and the state before and after all of them."""

    results: dict[str, subprocess.CompletedProcess[str]]
    cwds: dict[str, Path]
    before: tuple[str, dict[str, list[Any]]]
    after: tuple[str, dict[str, list[Any]]]


def _dump(cli: Cli) -> dict[str, list[Any]]:
    engine = sa.create_engine(f"sqlite:///{cli.data_dir / 'mdmbot.db'}")
    try:
        with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in conn.execute(sa.select(t))]
                for t in SQLModel.metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RefusalRun]:
    """One linked server "Jamf", then every refusal run side by side, each in an empty dir."""
    cli = Cli(tmp_path_factory.mktemp("refusals"))
    _write_bad_files(cli.work)
    cli.ok("db", "upgrade")
    cli.ok("server", "add", "Jamf", "--cert", "good.pem", "--out", "jamf.p7m")
    before = (cli.ok("server", "list", "--json"), _dump(cli))
    cwds: dict[str, Path] = {}
    for number, case in enumerate(REFUSALS):
        cwds[case] = cli.home / f"case{number}"
        cwds[case].mkdir()
        for name in (
            "good.pem",
            "random.bin",
            "truncated.der",
            "page.html",
            "key.pem",
            "request.pem",
            "ec.pem",
            "dsa.pem",
            "rsa1024.pem",
            "big.pem",
        ):
            (cwds[case] / name).symlink_to(cli.work / name)

    def run(case: str) -> subprocess.CompletedProcess[str]:
        return cli.run(*REFUSALS[case].args, cwd=cwds[case])

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = dict(zip(REFUSALS, pool.map(run, REFUSALS), strict=True))
    after = (cli.ok("server", "list", "--json"), _dump(cli))
    yield RefusalRun(results, cwds, before, after)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_input_is_refused_with_one_line(refusals: RefusalRun, case: str) -> None:
    result = refusals.results[case]

    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
    assert lines[0].startswith("mdmbot: ")
    assert REFUSALS[case].says in lines[0]
    assert "unexpected error" not in lines[0]
    # No token file (or anything else) was written where the command ran.
    written = {p.name for p in refusals.cwds[case].iterdir() if not p.is_symlink()}
    assert written == set()


def test_refusals_write_nothing(refusals: RefusalRun) -> None:
    listed_before, rows_before = refusals.before
    listed_after, rows_after = refusals.after

    assert listed_after == listed_before
    assert [s["name"] for s in json.loads(listed_after)] == ["Jamf"]
    assert rows_after == rows_before
    assert len(rows_before["auditevent"]) == 2  # the add and its token, nothing since


# --- the same flow on PostgreSQL --------------------------------------------------------------


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_the_command_line_on_postgresql(database_url: str, tmp_path: Path) -> None:
    cli = Cli(tmp_path, database_url=database_url)
    cert = _valid_now(0, "jamf.example.edu")
    (cli.work / "jamf.pem").write_bytes(cert.pem)

    cli.ok("server", "add", "Jamf", "--cert", "jamf.pem", "--out", "one.p7m")
    refused = cli.run("server", "add", wide("JAMF"), "--cert", "jamf.pem", "--out", "two.p7m")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "already exists" in refused.stderr
    cli.ok("token", "issue", "jamf", "--out", "two.p7m")
    tokens = cli.json("token", "list")

    assert [(t["server_name"], t["status"], t["reason"]) for t in tokens] == [
        ("Jamf", "active", None),
        ("Jamf", "superseded", "new token"),
    ]
    assert parse_content(decrypt(cli.work / "two.p7m", cert, tmp_path))["consumer_key"]
    assert not (cli.data_dir / "mdmbot.db").exists()  # the configured database was used
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM server")).scalars().all()
    finally:
        engine.dispose()
    assert names == ["Jamf"]
