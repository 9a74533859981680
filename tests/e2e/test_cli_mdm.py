"""Zero-touch links from the command line: `server add --mdm`, renewals installed, faults told."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.dep_client import Creds, call, dep_service, oauth_header, session_key
from tests.e2e.test_cli import Cli, _valid_now
from tests.fakemdm import ALLOW_LOOPBACK, FakeFleet, FakeNanoDep
from tests.fakemdm import NANODEP_KEY as KEY


def _cli(tmp_path: Path, key: str = KEY) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.work / "api.key").write_text(key + "\n")
    cli.env["MDMBOT_MDM_TIMEOUT"] = "2"
    cli.env["MDMBOT_MDM_ALLOW_NETWORKS"] = ALLOW_LOOPBACK
    return cli


def _creds(fields: dict[str, str]) -> Creds:
    return Creds(
        fields["consumer_key"],
        fields["consumer_secret"],
        fields["access_token"],
        fields["access_secret"],
        0,
    )


def _nanodep_args(fake: FakeNanoDep, dep_name: str = "school1") -> list[str]:
    return [
        "--mdm", "nanodep", "--mdm-url", fake.url, "--mdm-dep-name", dep_name,
        "--mdm-api-key-file", "api.key",
    ]  # fmt: skip


def test_link_renew_three_times_and_the_old_tokens_are_rejected(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path)
    cli.env["MDMBOT_DEP_PUBLIC_URL"] = "http://mdmbot.example.org:8443/"
    out = cli.ok("server", "add", "school1", *_nanodep_args(nanodep), "--actor", "U0ADMIN")
    assert out.startswith("Installed in NanoDEP (school1) — waiting for its first use; it expires")
    assert nanodep.configs["school1"] == {"base_url": "http://mdmbot.example.org:8443"}
    assert not list(cli.work.glob("*.p7m")), "no file when the token was installed"
    installed = [nanodep.tokens["school1"]]
    for _ in range(3):
        out = cli.ok("token", "issue", "school1")
        assert out.startswith("Installed in NanoDEP (school1)")
        installed.append(nanodep.tokens["school1"])
    assert len({t["consumer_key"] for t in installed}) == 1
    assert len({t["access_token"] for t in installed}) == 4
    uploads = [c for c in nanodep.calls if c.method == "PUT" and "tokenpki" in c.path]
    assert len(uploads) == 4 and all(c.query == {} for c in uploads), "never ?force=1"

    shown = cli.json("server", "show", "school1")
    assert shown["mdm"]["kind"] == "nanodep" and shown["mdm"]["dep_name"] == "school1"
    assert shown["mdm"]["url"] == nanodep.url and shown["mdm"]["last_install_error"] is None
    assert shown["mdm"]["last_install_at"]
    assert shown["install_note"] == "Installed in NanoDEP (school1) — waiting for its first use"
    everything = json.dumps(shown) + cli.ok("server", "show", "school1") + cli.ok("token", "list")
    assert KEY not in everything

    # NanoDEP's DEP client, with what NanoDEP holds, against mdmbot's device assignment service.
    with dep_service(cli.data_dir) as url:
        for old in installed[:-1]:
            header = oauth_header(_creds(old), f"{url}/session")
            assert call(f"{url}/session", {"Authorization": header})[:2] == (401, "token_rejected")
        key = session_key(url, _creds(installed[-1]))
        status, body, _ = call(f"{url}/account", {"X-ADM-Auth-Session": key})
        assert status == 200 and json.loads(body)["server_name"] == "school1"
    listed = cli.json("token", "list", "school1")
    assert listed[0]["installed_at"] and listed[0]["status"] == "active", "the newest is in use"
    assert "MDM server:          in use since " in cli.ok("server", "show", "school1")


def test_a_certificate_that_cannot_be_fetched_creates_nothing(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path, key="wrong-key")
    result = cli.run("server", "add", "school1", *_nanodep_args(nanodep))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "mdmbot: Could not fetch the certificate: 401 from NanoDEP (school1) — check the API "
        "key.\n"
    )
    assert cli.ok("server", "list").startswith("No MDM servers yet.")
    nanodep.stop()
    result = cli.run("server", "add", "school1", *_nanodep_args(nanodep))
    assert result.returncode == 1 and "Cannot reach NanoDEP (school1)" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_failed_install_keeps_the_token_and_push_retries_it(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    result = cli.run("server", "add", "school1", *_nanodep_args(nanodep), "--out", "t.p7m")
    assert result.returncode == 1
    assert result.stderr == (
        "mdmbot: the new token for “school1” is active, but it could not be installed in NanoDEP "
        "(school1): 500 from NanoDEP (school1): database is locked. It will be retried; "
        "`mdmbot token push school1` retries now.\n"
    )
    assert (cli.work / "t.p7m").exists(), "the file is kept where the operator asked"
    shown = cli.json("server", "show", "school1")
    assert shown["state"] == "ok" and shown["token_id"]
    assert shown["mdm"]["last_install_error"] == (
        "install failed once: 500 from NanoDEP (school1): database is locked."
    )
    assert "school1" not in nanodep.tokens
    out = cli.ok("token", "push", "school1")
    assert out == "Installed the active token for “school1” in NanoDEP (school1).\n"
    assert nanodep.tokens["school1"]
    assert cli.json("server", "show", "school1")["mdm"]["last_install_error"] is None


def test_a_refused_api_key_is_not_said_to_be_retried(nanodep: FakeNanoDep, tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    nanodep.fail_next(401, {"error": "unauthorized"}, method="PUT")
    result = cli.run("server", "add", "school1", *_nanodep_args(nanodep), "--out", "t.p7m")
    assert result.returncode == 1 and "401 from NanoDEP (school1)" in result.stderr
    assert "Retrying cannot help: give mdmbot the new API key" in result.stderr
    assert "retried" not in result.stderr and "token push" not in result.stderr
    shown = cli.ok("server", "show", "school1")
    assert "State:               install failing\n" in shown
    [row] = [line for line in shown.splitlines() if line.startswith("MDM server:")]
    assert row.startswith("MDM server:          Install failed once: 401 from NanoDEP (school1)")
    assert "retrying cannot help: give mdmbot the new API key" in row
    assert "keeps retrying" not in shown and "tries again" not in shown
    assert cli.json("server", "show", "school1")["install_note"] == row.split(None, 2)[2]
    listed = cli.ok("server", "list").splitlines()
    assert listed[0].split()[:3] == ["NAME", "RELEASE", "STATE"]
    assert listed[1].startswith("school1  yes      install failing  ")
    nanodep.fail_next(401, {"error": "unauthorized"}, method="PUT")
    result = cli.run("token", "push", "school1")
    assert result.returncode == 1 and "Retrying cannot help" in result.stderr
    assert "retried" not in result.stderr


def test_a_failing_install_is_shown_as_slack_shows_it(nanodep: FakeNanoDep, tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    nanodep.fail_next(500, {"error": "database is locked"}, method="PUT")
    assert cli.run("server", "add", "school1", *_nanodep_args(nanodep), "--out", "t.p7m").returncode
    shown = cli.ok("server", "show", "school1")
    assert "State:               install failing\n" in shown
    assert "; mdmbot tries again 20" in shown and "`mdmbot token push school1` tries now." in shown
    assert "install failing" in cli.ok("server", "list").splitlines()[1]


def test_connect_disconnect_fleet_and_command(tmp_path: Path) -> None:
    cli = _cli(tmp_path, key="fleet-api-token")
    fleet = FakeFleet("fleet-api-token").start()
    try:
        cert = tmp_path / "mdm.pem"
        cert.write_bytes(_valid_now(4, "mdm.example.edu").pem)
        cli.ok("server", "add", "Jamf", "--cert", str(cert), "--out", "first.p7m")
        assert cli.json("server", "show", "Jamf")["mdm"] is None
        out = cli.ok(
            "server", "connect", "Jamf", "--mdm", "fleet", "--mdm-url", fleet.url,
            "--mdm-api-key-file", "api.key",
        )  # fmt: skip
        assert "a new token replaces the active one" in out and "Installed in Fleet" in out
        assert cli.ok("token", "issue", "Jamf").startswith("Installed in Fleet (127.0.0.1)")
        assert [c.method for c in fleet.calls if "abm_tokens" in c.path] == ["POST", "PATCH"]
        assert len(fleet.tokens) == 1
    finally:
        fleet.stop()

    seen = tmp_path / "installed.p7m"
    script = tmp_path / "upload.sh"
    script.write_text(f'#!/bin/sh\ncp "$MDMBOT_TOKEN_FILE" {seen}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    out = cli.ok("server", "connect", "Jamf", "--mdm", "command", "--mdm-command", str(script))
    assert out == (
        "Connected “Jamf” to install command (upload.sh).\n"
        "Installed the active token for “Jamf” in install command (upload.sh).\n"
    )
    assert seen.exists()
    assert cli.json("server", "show", "Jamf")["mdm"]["kind"] == "command"
    assert cli.ok("server", "disconnect", "Jamf").startswith("Disconnected “Jamf”")
    assert cli.json("server", "show", "Jamf")["mdm"] is None
    result = cli.run("token", "push", "Jamf")
    assert (result.returncode, result.stderr) == (
        1,
        "mdmbot: “Jamf” is not connected to an MDM server.\n",
    )
    out = cli.ok("token", "issue", "Jamf", "--out", "plain.p7m")
    assert "Upload it to the MDM server" in out, "disconnected: a file again"


def test_connections_to_where_mdmbot_must_not_go_are_refused(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path)
    port = nanodep.url.rsplit(":", 1)[1]
    refused = {
        f"http://u:p@127.0.0.1:{port}": "--mdm-url must not hold a user name or password; give "
        "the API key in its file.",
        f"{nanodep.url}/?x=1": "--mdm-url must not hold a query (?) or fragment (#).",
        f"{nanodep.url}#frag": "--mdm-url must not hold a query (?) or fragment (#).",
        "http://127.0.0.1:99999": "--mdm-url must be an http(s) URL such as "
        "https://mdm.example.org.",
    }
    for url, message in refused.items():
        args = [*_nanodep_args(nanodep)]
        args[args.index(nanodep.url)] = url
        result = cli.run("server", "add", "school1", *args)
        assert (result.returncode, result.stderr) == (1, f"mdmbot: {message}\n"), url
    del cli.env["MDMBOT_MDM_ALLOW_NETWORKS"]
    for host in ("127.0.0.1", "2130706433", "[::1]", "localhost"):
        args = [*_nanodep_args(nanodep)]
        args[args.index(nanodep.url)] = f"http://{host}:{port}"
        result = cli.run("server", "add", "school1", *args)
        said = f"Could not fetch the certificate: mdmbot does not connect to {host.strip('[]')} "
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert "MDMBOT_MDM_ALLOW_NETWORKS" in result.stderr
    assert nanodep.calls == [] and cli.ok("server", "list").startswith("No MDM servers yet.")


def test_a_key_with_a_line_break_is_refused_in_one_line(tmp_path: Path) -> None:
    cli = _cli(tmp_path, key="fleet-api\ntoken")
    cli.env["MDMBOT_DEBUG"] = "1"
    result = cli.run(
        "server", "add", "Jamf", "--mdm", "fleet", "--mdm-url", "https://fleet.example.org",
        "--mdm-api-key-file", "api.key",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        1,
        "mdmbot: The API key is one line without spaces or control characters "
        "(--mdm-api-key-file).\n",
    )


def test_plain_http_is_named_and_a_command_must_exist(tmp_path: Path) -> None:
    cli = _cli(tmp_path, key="fleet-api-token")
    result = cli.run(
        "server", "add", "Jamf", "--mdm", "fleet", "--mdm-url", "http://fleet.invalid",
        "--mdm-api-key-file", "api.key",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(
        "warning: http://fleet.invalid is plain http://: the API key and every token cross the "
        "network unencrypted; use https:// unless the network to the MDM server is trusted.\n"
    )
    cert = tmp_path / "mdm.pem"
    cert.write_bytes(_valid_now(4, "mdm.example.edu").pem)
    cli.ok("server", "add", "Jamf", "--cert", str(cert), "--out", "first.p7m")
    for command, message in {
        "./upload.sh": "The install command ./upload.sh does not exist (--mdm-command).",
        "no-such-program-xyz": "The install command no-such-program-xyz does not exist "
        "(--mdm-command).",
        "first.p7m": "The install command first.p7m does not exist (--mdm-command).",
        "./first.p7m": "The install command ./first.p7m is not executable (--mdm-command).",
    }.items():
        result = cli.run("server", "connect", "Jamf", "--mdm", "command", "--mdm-command", command)
        assert (result.returncode, result.stderr) == (1, f"mdmbot: {message}\n")
    assert cli.json("server", "show", "Jamf")["mdm"] is None, "nothing saved"
    script = cli.work / "upload.sh"
    script.write_text('#!/bin/sh\npwd > "$HOME/ran-in"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    cli.env["HOME"] = str(tmp_path)
    cli.ok("server", "connect", "Jamf", "--mdm", "command", "--mdm-command", "./upload.sh x")
    ran_in = (tmp_path / "ran-in").read_text().strip()
    assert Path(ran_in).name.startswith("mdmbot-install-") and not Path(ran_in).exists()
    cli.ok("token", "push", "Jamf", cwd=tmp_path)  # the program was saved with its full path


def test_a_token_active_before_a_failed_push_is_reported_as_such(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path)
    cli.ok("server", "add", "school1", *_nanodep_args(nanodep))
    first = cli.json("token", "list", "school1")[0]["id"]
    nanodep.answer_next_raw(b"SSH-2.0-OpenSSH_9.6\r\n", method="PUT")
    result = cli.run("token", "issue", "school1", "--yes")
    assert (result.returncode, result.stderr) == (
        1,
        "mdmbot: the new token for “school1” is active and the previous one no longer works, "
        "but it could not be installed in NanoDEP (school1): NanoDEP (school1) at 127.0.0.1 did "
        "not answer in HTTP mdmbot can read (BadStatusLine). It will be retried; `mdmbot token "
        "push school1` retries now.\n",
    )
    listed = cli.json("token", "list", "school1")
    assert listed[0]["status"] == "active" and listed[0]["id"] != first


def test_a_new_consumer_key_replaces_nanodeps_own_token_with_force(
    nanodep: FakeNanoDep, tmp_path: Path
) -> None:
    cli = _cli(tmp_path)
    cli.ok("server", "add", "school1", *_nanodep_args(nanodep))
    old_key = nanodep.tokens["school1"]["consumer_key"]
    out = cli.ok("token", "issue", "school1", "--new-consumer-key", "--yes")
    assert out.startswith("Installed in NanoDEP (school1)")
    new_key = nanodep.tokens["school1"]["consumer_key"]
    assert new_key != old_key
    cli.ok("token", "issue", "school1", "--yes")
    assert nanodep.tokens["school1"]["consumer_key"] == new_key, "the new key stays"
    uploads = [c.query for c in nanodep.calls if c.method == "PUT" and "tokenpki" in c.path]
    assert uploads == [{}, {"force": ["1"]}, {}], "forced only over its own other key"

    nanodep.tokens["school1"]["consumer_key"] = "another-servers-key"  # uploaded by someone else
    result = cli.run("token", "issue", "school1", "--yes")
    assert result.returncode == 1
    assert (
        "500 from NanoDEP (school1): mismatched consumer key — it holds a token with another "
        "consumer key under this DEP name, which mdmbot did not install there through this "
        "connection (another server's?); mdmbot replaces only its own."
    ) in result.stderr
    assert nanodep.tokens["school1"]["consumer_key"] == "another-servers-key"
