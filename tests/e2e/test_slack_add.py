"""Scenario: an administrator adds an MDM server from Slack and gets the token by DM."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.slack.builders import modals
from tests import certs
from tests.e2e.conftest import ADMIN
from tests.fakeslack import FakeSlack
from tests.slack_harness import Bot, cert_file_state


def add_values(fake: FakeSlack, name: str, pem: bytes, release: bool = True) -> dict:
    option = {"text": {"type": "plain_text", "text": modals.RELEASE_LABEL}, "value": "release"}
    return {
        "name": {"type": "plain_text_input", "value": name},
        "release": {"type": "checkboxes", "selected_options": [option] if release else []},
        "certificate": cert_file_state(fake, pem),
    }


def test_add_flow_ends_with_a_dm_token_that_openssl_decrypts(
    bot: Bot, fake: FakeSlack, tmp_path: Path
) -> None:
    reply = bot.command(ADMIN, "add")
    assert reply.status == 200 and reply.elapsed < 3
    bot.wait_idle(lambda: bool(fake.calls_to("views.open")))
    view = fake.calls_to("views.open")[0].params["view"]
    assert view["callback_id"] == modals.ADD_SERVER
    release = next(b for b in view["blocks"] if b.get("block_id") == "release")
    assert release["element"]["initial_options"], "release devices is checked by default"
    upload = next(b for b in view["blocks"] if b.get("block_id") == "certificate")
    assert upload["element"]["type"] == "file_input"

    cert = certs.self_signed_rsa()
    reply = bot.submit(ADMIN, view, add_values(fake, "Jamf Pro", cert.pem))
    assert reply.status == 200
    assert reply.json()["response_action"] == "update"
    bot.wait_idle(lambda: len(fake.uploads) == 1)
    upload_done = fake.uploads[0]
    assert upload_done["channel_id"].startswith("D")
    assert upload_done["filename"].startswith("Jamf_Pro_Token_")
    assert "expires" in upload_done["initial_comment"]
    assert "stopped working" not in upload_done["initial_comment"], "a first token replaces none"
    token = tmp_path / "token.p7m"
    token.write_bytes(upload_done["bytes"])
    key = tmp_path / "key.pem"
    key.write_bytes(cert.key_pem)
    out = subprocess.run(
        ["openssl", "smime", "-decrypt", "-in", str(token), "-inkey", str(key)],
        capture_output=True,
        check=True,
    ).stdout
    assert b'"consumer_key":"CK_' in out
    bot.wait_idle(
        lambda: any(
            "in your DMs" in str(c.params.get("view")) for c in fake.calls_to("views.update")
        )
    )
    reply = bot.command(ADMIN, "list")
    assert "*Jamf Pro* — waiting for upload · expires <!date^" in reply.json()["blocks"][1]["text"][
        "text"
    ]
    metrics = bot.get("/metrics", base=bot.metrics_url).body
    assert 'mdmbot_token_days_until_expiry{server="Jamf Pro"} 36' in metrics
    issued = next(
        line for line in metrics.splitlines() if line.startswith("mdmbot_tokens_issued_total")
    )
    assert float(issued.split()[-1]) >= 1
