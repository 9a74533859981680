"""Logs never carry a Slack token or a server token credential."""

from __future__ import annotations

import json
import logging

from bot.logs import JsonFormatter, RedactingFormatter, redact

SECRETS = [
    "xoxb-1234-5678-abcdefABCDEF",
    "xapp-1-A111-222-abcdef",
    "CK_" + "ab" * 48,
    "CS_" + "0f" * 20,
    "AS_" + "9a" * 20,
    "AT_O1234567890O" + "c" * 40 + "O1795790691415",
]


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("mdmbot.test", logging.WARNING, __file__, 1, message, None, None)


def test_every_secret_shape_is_redacted_in_text_and_json() -> None:
    for secret in SECRETS:
        line = f"calling Slack with {secret} now"
        assert secret not in redact(line)
        assert secret not in RedactingFormatter("%(message)s").format(record(line))
        data = json.loads(JsonFormatter().format(record(line)))
        assert data["message"] == "calling Slack with [redacted] now"
        assert data["level"] == "warning" and data["logger"] == "mdmbot.test"


def test_ordinary_text_is_left_alone() -> None:
    text = "token for Jamf Pro expires 2027-11-27; CK_ alone is fine"
    assert redact(text) == text
