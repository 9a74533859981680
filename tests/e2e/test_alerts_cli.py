"""`mdmbot alerts run [--at TIME] [--dry-run]` as an operator runs it."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from tests import certs
from tests.fakeslack import FakeSlack
from tests.processes import bot_env, run_cli


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), env=env)


def test_alerts_run_previews_then_posts_once(fake: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(fake, tmp_path)
    cert = tmp_path / "mdm.pem"
    cert.write_bytes(certs.self_signed_rsa().pem)
    assert run(env, "db", "upgrade").returncode == 0
    added = run(
        env,
        "server",
        "add",
        "Jamf Pro",
        "--cert",
        str(cert),
        "--actor",
        "UADMIN01",
        "--out",
        str(tmp_path / "t.p7m"),
    )
    assert added.returncode == 0, added.stderr
    expiry = datetime.fromisoformat(added.stdout.split("expires ")[1].split(".")[0])
    preview_at = (expiry - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

    nothing = run(env, "alerts", "run", "--dry-run")
    assert nothing.returncode == 0 and nothing.stdout.startswith("Nothing due")
    preview = run(env, "alerts", "run", "--dry-run", "--at", preview_at)
    assert preview.returncode == 0, preview.stderr
    assert (
        "would post to C0ALERTS: The server token for Jamf Pro expires in 30 days" in preview.stdout
    )
    assert not fake.calls_to("chat.postMessage"), "a dry run posts nothing"

    # --at is a preview only: without --dry-run it is refused and claims nothing.
    refused = run(env, "alerts", "run", "--at", preview_at)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        "mdmbot: --at only previews: add --dry-run to see what would be posted then. "
        "A real sweep always runs as of now.\n"
    )
    assert not fake.calls_to("chat.postMessage")
    still = run(env, "alerts", "run", "--dry-run", "--at", preview_at)
    assert "expires in 30 days" in still.stdout, "the 30-day alert is still unclaimed"

    # A real sweep runs as of now: with a 400-day threshold the new token's alert is due today.
    env["MDMBOT_ALERT_DAYS"] = "400"
    first = run(env, "alerts", "run")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("1 alert posted")
    again = run(env, "alerts", "run")
    assert again.stdout.startswith("0 alerts posted")
    assert len(fake.messages_in("C0ALERTS")) == 1

    bad = run(env, "alerts", "run", "--dry-run", "--at", "next tuesday")
    assert bad.returncode == 1 and "RFC 3339" in bad.stderr and "Traceback" not in bad.stderr
