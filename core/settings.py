"""Settings read from the environment (and `.env`), DESIGN.md §8."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.files import refuse_file

log = logging.getLogger("mdmbot.settings")

DEFAULT_ALERT_DAYS = (60, 30, 14, 7, 3, 1)
ENV_FILE = ".env"
# Read outside Settings: serve options, the debug switch, the container, tests and benchmarks.
OTHER_VARIABLES = frozenset(
    {
        "MDMBOT_DEBUG",
        "MDMBOT_HOST",
        "MDMBOT_WORKERS",
        "MDMBOT_METRICS_HOST",
        "MDMBOT_METRICS_PORT",
        "MDMBOT_MODE",
        "MDMBOT_TOKEN_FILE",
        "MDMBOT_TOKEN_FILENAME",
        "MDMBOT_SERVER_NAME",
        "MDMBOT_TEST_DATABASE_URL",
        "MDMBOT_TEST_DEPSERVER",
        "MDMBOT_TEST_DEPSYNCER",
        "MDMBOT_BENCH_DATABASE_URL",
        "MDMBOT_BENCH_OLD_FRONT",
    }
)

# Apple's hosts for each API (ASM-API.md §1, §3).
SCHOOL_PORTAL, BUSINESS_PORTAL = "Apple School Manager", "Apple Business"  # Apple's portals
APPLE_API_URLS = {
    "school": "https://api-school.apple.com",
    "business": "https://api-business.apple.com",
}
APPLE_TOKEN_URL = "https://account.apple.com/auth/oauth2/v2/token"  # noqa: S105

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, fd00::/8` as networks; ValueError naming the first malformed one."""
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"“{item}” is not a network such as 10.0.0.0/8") from exc
    return tuple(networks)


def default_data_dir() -> Path:
    """The per-user data directory used when MDMBOT_DATA_DIR is not set."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mdmbot"


class Settings(BaseSettings):
    """Every setting mdmbot reads; Slack ones are checked only by the commands that need them."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore", case_sensitive=False)

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    mdmbot_database_url: str | None = None
    mdmbot_data_dir: Path = Field(default_factory=default_data_dir)
    mdmbot_secret_key: str | None = None
    mdmbot_admins: str = ""
    mdmbot_alert_channel: str | None = None
    mdmbot_alert_days: str = ",".join(str(d) for d in DEFAULT_ALERT_DAYS)
    mdmbot_sweep_minutes: float = 60.0
    mdmbot_lease_seconds: float = 60.0
    mdmbot_log_format: str = "text"
    mdmbot_dep_port: int | None = None
    mdmbot_dep_host: str = "0.0.0.0"  # noqa: S104
    mdmbot_dep_public_url: str | None = None
    mdmbot_org_name: str = "mdmbot"
    mdmbot_org_email: str = ""
    mdmbot_org_phone: str = ""
    mdmbot_org_address: str = ""
    mdmbot_org_id: str = "mdmbot"
    mdmbot_backup_dir: Path | None = None
    mdmbot_backup_keep: int = 7
    mdmbot_mdm_ca_bundle: Path | None = None
    mdmbot_mdm_timeout: float = 10.0
    mdmbot_mdm_allow_networks: str = ""
    mdmbot_progress_interval: float = Field(default=0.25, ge=0)
    mdmbot_asm_api_rate: int = 1000  # School Manager API requests per minute per API account
    mdmbot_apple_api: Literal["school", "business"] | None = None
    mdmbot_apple_client_id: str | None = None
    mdmbot_apple_key_id: str | None = None
    mdmbot_apple_key_file: Path | None = None
    mdmbot_apple_api_url: str | None = None
    mdmbot_apple_token_url: str | None = None

    @field_validator("mdmbot_sweep_minutes", "mdmbot_lease_seconds", "mdmbot_mdm_timeout")
    @classmethod
    def _positive_minutes(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive number")
        return value

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret")
    @classmethod
    def _slack_credential(cls, value: str | None) -> str | None:
        if not value:
            return value
        if "…" in value:
            raise ValueError("it still holds the example's “…”: paste the value Slack shows")
        quoted = value[0] in "\"'" or value[-1] in "\"'"  # `docker run --env-file` keeps quotes
        if quoted or not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("it must be the value Slack shows: ASCII, no spaces or quotes")
        return value

    @field_validator("mdmbot_apple_api", mode="before")
    @classmethod
    def _apple_api(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if isinstance(value, str) else value

    @field_validator(
        "mdmbot_data_dir", "mdmbot_backup_dir", "mdmbot_mdm_ca_bundle", "mdmbot_apple_key_file"
    )
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("mdmbot_dep_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError as exc:
            raise ValueError("the host or port is malformed") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError("it must be an http(s) URL naming a host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("it must be scheme://host[:port]/ alone")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("mdmbot_mdm_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("mdmbot_asm_api_rate")
    @classmethod
    def _some_requests(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must allow at least 1 request per minute")
        return value

    @field_validator("mdmbot_backup_keep")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must keep at least 1 backup")
        return value

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL: the configured one or SQLite in the data directory."""
        if self.mdmbot_database_url:
            return self.mdmbot_database_url
        return f"sqlite:///{self.mdmbot_data_dir / 'mdmbot.db'}"

    @property
    def apple_mode(self) -> bool:
        """True when mdmbot fronts a real Apple School Manager or Apple Business (DESIGN.md §1a)."""
        return self.mdmbot_apple_api is not None

    @property
    def apple_portal(self) -> str:
        """The name of Apple's portal in Apple mode's words: Apple Business or School Manager."""
        return BUSINESS_PORTAL if self.mdmbot_apple_api == "business" else SCHOOL_PORTAL

    @property
    def apple_api_url(self) -> str:
        """The bare origin of Apple's School Manager or Business API (no `/v1`)."""
        if self.mdmbot_apple_api_url:
            return self.mdmbot_apple_api_url.rstrip("/")
        return APPLE_API_URLS[self.mdmbot_apple_api or "school"]

    @property
    def apple_token_url(self) -> str:
        """Apple's OAuth token endpoint, also the client assertion's `aud`."""
        return self.mdmbot_apple_token_url or APPLE_TOKEN_URL

    @property
    def mdm_allow_networks(self) -> tuple[Network, ...]:
        """Networks mdmbot may reach MDM servers in although they are not public."""
        return parse_networks(self.mdmbot_mdm_allow_networks)

    @property
    def admins(self) -> list[str]:
        """Slack user ids granted Administrator at start."""
        return [a.strip() for a in self.mdmbot_admins.replace(" ", ",").split(",") if a.strip()]

    @property
    def alert_days(self) -> tuple[int, ...]:
        """Expiry alert thresholds in days, most distant first."""
        try:
            days = {int(d) for d in self.mdmbot_alert_days.split(",") if d.strip()}
        except ValueError as exc:
            raise ConfigError(
                f"MDMBOT_ALERT_DAYS must be whole numbers separated by commas, "
                f"not {self.mdmbot_alert_days!r}."
            ) from exc
        if any(d <= 0 for d in days):
            raise ConfigError("MDMBOT_ALERT_DAYS must hold positive numbers of days.")
        return tuple(sorted(days, reverse=True))

    def require(self, *names: str) -> None:
        """Stop with one line naming the first missing required setting."""
        for name in names:
            if not getattr(self, name.lower(), None):
                raise ConfigError(f"Missing required setting {name.upper()}.")


def known_variables() -> frozenset[str]:
    """Every MDMBOT_* variable mdmbot reads."""
    own = {name.upper() for name in Settings.model_fields if name.startswith("mdmbot_")}
    return frozenset(own) | OTHER_VARIABLES


def unknown_variables(env_file: Path = Path(ENV_FILE)) -> list[tuple[str, str, str | None]]:
    """Unread MDMBOT_* names in the environment or `.env`: (name, where, closest known name)."""
    found = {name.upper(): "the environment" for name in os.environ}
    if env_file.is_file():
        try:
            names = dotenv_values(env_file)
        except (OSError, UnicodeDecodeError):
            names = {}
        found.update({name.upper(): str(env_file) for name in names if name.upper() not in found})
    known = known_variables()
    unknown = sorted(n for n in found if n.startswith("MDMBOT_") and n not in known)
    closest = {n: difflib.get_close_matches(n, known, 1) for n in unknown}
    return [(n, found[n], closest[n][0] if closest[n] else None) for n in unknown]


def warn_unknown_variables() -> None:
    """Log one warning per misspelt or unknown MDMBOT_* setting, naming the closest known one."""
    for name, where, closest in unknown_variables():
        hint = f" Did you mean {closest}?" if closest else ""
        log.warning("%s (in %s) is not a setting mdmbot knows; it is ignored.%s", name, where, hint)


def load_settings() -> Settings:
    """Read the settings, turning a malformed value into one readable line."""
    warn_unknown_variables()
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"Invalid setting {where}: {message}.") from exc
    refuse_file(settings.mdmbot_data_dir, "MDMBOT_DATA_DIR")
    return settings
