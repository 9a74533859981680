"""Prometheus metrics of mdmbot, summed over its worker processes, and the /metrics app.

With several workers, `bot.serve` sets PROMETHEUS_MULTIPROC_DIR before this module is imported:
each worker then writes its samples to files there, and a scrape adds them up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("mdmbot.metrics")
_T = TypeVar("_T")

if TYPE_CHECKING:
    from core.tokens.servers import ServerView


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

scheduler_leader = Gauge(
    "mdmbot_scheduler_leader",
    "1 while this process holds the scheduler lease and runs the sweeps",
    registry=registry,
    multiprocess_mode="livesum",
)
last_sweep = Gauge(
    "mdmbot_scheduler_last_sweep_timestamp_seconds",
    "When this process last finished a sweep (Unix time)",
    registry=registry,
    multiprocess_mode="max",
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


def multiprocess_mode() -> bool:
    """True when samples are shared between worker processes (PROMETHEUS_MULTIPROC_DIR)."""
    return values.ValueClass is not values.MutexValue


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that exited (its counters still count)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def render() -> bytes:
    """The metrics in Prometheus text format, every worker's samples added up."""
    if not multiprocess_mode():
        return generate_latest(registry)
    scrape = CollectorRegistry()
    multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
        scrape, os.environ["PROMETHEUS_MULTIPROC_DIR"]
    )
    for collector in (_expiry, _installs, _backups):
        if collector is not None:
            scrape.register(collector)
    return generate_latest(scrape)


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The metrics listener: GET /metrics, nothing else."""
    if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in (
        "GET",
        "HEAD",
    ):
        body, status, ctype = b"Not Found", "404 Not Found", "text/plain"
    else:
        body, status, ctype = render(), "200 OK", CONTENT_TYPE_LATEST
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


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


class BackupCollector(Collector):
    """Seconds since the newest scheduled backup in MDMBOT_BACKUP_DIR, read at scrape time."""

    def __init__(self, age: Callable[[], float | None]) -> None:
        self._age = age

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One sample when a scheduled backup exists."""
        family = GaugeMetricFamily(
            "mdmbot_backup_age_seconds", "Seconds since the newest scheduled backup was written"
        )
        age = self._age()
        if age is not None:
            family.add_metric([], age)
        yield family


_backups: BackupCollector | None = None


def watch_backups(age: Callable[[], float | None] | None) -> None:
    """Publish the newest backup's age from this source (replacing an earlier one; None: none)."""
    global _backups
    if _backups is not None:
        registry.unregister(_backups)
    _backups = BackupCollector(age) if age is not None else None
    if _backups is not None:
        registry.register(_backups)
