"""Prometheus metrics of one mdmbot process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("mdmbot.metrics")
_T = TypeVar("_T")

if TYPE_CHECKING:
    from core.servers import ServerView


registry = CollectorRegistry(auto_describe=True)

requests = Counter(
    "mdmbot_slack_requests",
    "Slack requests received, by kind and HTTP status",
    ["kind", "status"],
    registry=registry,
)
ack_seconds = Histogram(
    "mdmbot_ack_seconds",
    "Time from receiving a Slack request to answering it",
    ["kind"],
    registry=registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
)
tokens_issued = Counter(
    "mdmbot_tokens_issued", "Server tokens delivered and activated", registry=registry
)
token_delivery_failures = Counter(
    "mdmbot_token_delivery_failures", "Token files Slack did not deliver", registry=registry
)
alerts_sent = Counter(
    "mdmbot_alerts_sent", "Expiry alerts and checklists posted", ["kind"], registry=registry
)
alerts_failed = Counter(
    "mdmbot_alerts_failed", "Alert posts Slack refused (retried later)", ["kind"], registry=registry
)


def _read(source: Callable[[], _T], fallback: _T) -> _T:
    """A gauge's data; during a database outage the scrape still answers, without its samples."""
    try:
        return source()
    except SQLAlchemyError as exc:
        log.warning("metrics: database unavailable (%s)", type(exc).__name__)
        return fallback


class ExpiryCollector(Collector):
    """Days until the active token of each server expires, read at scrape time."""

    def __init__(self, servers: Callable[[], list[ServerView]], now: Callable[[], datetime]):
        self._servers = servers
        self._now = now

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One gauge sample per server with an active token."""
        family = GaugeMetricFamily(
            "mdmbot_token_days_until_expiry",
            "Days until the server's active token expires",
            labels=["server"],
        )
        now = self._now()
        views: list[ServerView] = _read(self._servers, [])
        for view in views:
            if view.token_expires_at is not None:
                family.add_metric(
                    [view.name], (view.token_expires_at - now).total_seconds() / 86400
                )
        yield family


_expiry: ExpiryCollector | None = None


def watch_expiry(servers: Callable[[], list[ServerView]], now: Callable[[], datetime]) -> None:
    """Publish the per-server expiry gauge from this source (replacing an earlier one)."""
    global _expiry
    if _expiry is not None:
        registry.unregister(_expiry)
    _expiry = ExpiryCollector(servers, now)
    registry.register(_expiry)


def render() -> bytes:
    """The metrics in Prometheus text format."""
    return generate_latest(registry)


dep_requests = Counter(
    "mdmbot_dep_requests",
    "Device assignment service requests, by endpoint and HTTP status",
    ["endpoint", "status"],
    registry=registry,
)
dep_session_failures = Counter(
    "mdmbot_dep_session_failures",
    "Refused GET /session requests, by reason",
    ["reason"],
    registry=registry,
)


class InstallCollector(Collector):
    """Active tokens installed by their MDM server or not, read at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One sample per state (`installed`, `not_installed`)."""
        family = GaugeMetricFamily(
            "mdmbot_tokens_installed",
            "Active server tokens by whether their MDM server has used them",
            labels=["state"],
        )
        counts: dict[str, int] = _read(self._counts, {})
        for state, number in sorted(counts.items()):
            family.add_metric([state], number)
        yield family


_installs: InstallCollector | None = None


def watch_installs(counts: Callable[[], dict[str, int]]) -> None:
    """Publish the installed/not-installed token gauge from this source (replacing an earlier)."""
    global _installs
    if _installs is not None:
        registry.unregister(_installs)
    _installs = InstallCollector(counts)
    registry.register(_installs)
