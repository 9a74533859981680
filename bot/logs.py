"""Logging set-up: plain text or one JSON object a line (MDMBOT_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

SECRET = re.compile(
    r"\b(xox[abpe]-[\w-]+|xapp-[\w-]+|(?:CK|CS|AS)_[0-9a-f]{20,}|AT_O\d+O[0-9a-f]+O\d+)"
)


def redact(text: str) -> str:
    """Hide anything shaped like a Slack token or server token credential."""
    return SECRET.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON, secrets redacted."""
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data)


class RedactingFormatter(logging.Formatter):
    """The plain text format, secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as text, secrets redacted."""
        return redact(super().format(record))


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    """Send logs to stderr as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "alembic", "slack_bolt", "mdmbot.bolt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
