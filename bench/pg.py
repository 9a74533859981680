"""PostgreSQL: two `serve` replicas on one database, Slack and DEP load at the same time.

Runs when `MDMBOT_BENCH_DATABASE_URL` (or `MDMBOT_TEST_DATABASE_URL`) names a PostgreSQL
database: a fresh schema seeded with 50 servers (16 of them with an installed token), two
`mdmbot serve --http --no-scheduler --workers 2 --dep-port` replicas on it, then at once: signed
`/mdm list` at 16 concurrent into one replica's Slack port, and 16 MDM servers doing `/session`
then `/account` into the other replica's DEP port. The figures sit beside the SQLite ones of the
same run (one process tree per database, the same load generators).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ack import WORKERS, load, mdmbot_env
from bench.common import (
    ROOT,
    Row,
    Section,
    free_port,
    ms,
    percentile,
    pg_schema,
    python,
    stop_process,
    tree_cpu_seconds,
    wait_healthy,
)
from bench.dep import CONCURRENCY, TARGET_P99, _creds, _load, _wait_dep
from bench.fake import start_fake
from bench.seed import add_servers, bench_settings
from bot.context import AppContext
from core import db

COUNTS = {False: 2000, True: 400}
PAIRS = {False: 1000, True: 200}


def _url() -> str | None:
    url = os.environ.get("MDMBOT_BENCH_DATABASE_URL") or os.environ.get(
        "MDMBOT_TEST_DATABASE_URL"
    )
    return url if url and url.startswith("postgresql") else None


def _replica(fake: Any, data: Path, url: str, slack: int, dep: int) -> subprocess.Popen[bytes]:
    log = (data / f"replica-{slack}.log").open("wb")
    env = {**mdmbot_env(fake, data), "MDMBOT_DATABASE_URL": url}
    return subprocess.Popen(
        [
            python(), "-m", "bot.cli", "serve", "--http", "--no-scheduler",
            "--host", "127.0.0.1", "--port", str(slack), "--metrics-port", str(free_port()),
            "--workers", str(WORKERS), "--dep-host", "127.0.0.1", "--dep-port", str(dep),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run(quick: bool) -> Section:
    """Both loads at once on two replicas sharing one PostgreSQL schema."""
    section = Section("PostgreSQL: two replicas, Slack and DEP load together")
    base = _url()
    if base is None:
        section.details.append("skipped: MDMBOT_BENCH_DATABASE_URL names no PostgreSQL database")
        return section
    with pg_schema(base) as url:
        fake = start_fake()
        replicas: list[subprocess.Popen[bytes]] = []
        try:
            with tempfile.TemporaryDirectory(prefix="mdmbot-bench-pg-") as tmp:
                db.upgrade(url)
                ctx = AppContext(bench_settings(tmp, fake.url, url))
                add_servers(ctx, 50, datetime.now(UTC))
                creds = _creds(ctx)[:CONCURRENCY]
                ctx.engine.dispose()
                ports = [(free_port(), free_port()) for _ in range(2)]
                replicas = [_replica(fake, Path(tmp), url, s, d) for s, d in ports]
                for process, (slack, dep) in zip(replicas, ports, strict=True):
                    wait_healthy(f"http://127.0.0.1:{slack}/healthz", process)
                    _wait_dep(dep, process)
                cpu = sum(tree_cpu_seconds(p.pid) for p in replicas)
                with ThreadPoolExecutor(2) as pool:
                    acks = pool.submit(load, ports[0][0], "list", 16, COUNTS[quick], 0, fake.root)
                    pairs = pool.submit(_load, ports[1][1], creds, PAIRS[quick])
                    slack_result, dep_result = acks.result(), pairs.result()
                cpu = sum(tree_cpu_seconds(p.pid) for p in replicas) - cpu
        finally:
            for process in replicas:
                stop_process(process)
            fake.stop()
    _report(section, slack_result, dep_result, cpu)
    return section


def _report(section: Section, slack: dict[str, Any], dep: dict[str, Any], cpu: float) -> None:
    acks = slack["latencies"]
    bad = {s: n for s, n in slack["statuses"].items() if s != "200"}
    bad.update({f"dep {s}": n for s, n in dep["statuses"].items() if s != "200"})
    p99 = {k: percentile(dep[k], 99) for k in ("session", "account")}
    section.rows += [
        Row(
            "PostgreSQL, 2 replicas × 2 workers: `/mdm list` ack, 16 concurrent, DEP load at once",
            f"p50 {ms(percentile(acks, 50))}, p99 {ms(percentile(acks, 99))}, "
            f"{len(acks) / slack['wall']:.0f} req/s",
            "SQLite rows above (one replica, no DEP load)",
            "—",
            None,
        ),
        Row(
            "PostgreSQL, 2 replicas × 2 workers: `/session` then `/account`, 16 concurrent, "
            "Slack load at once",
            f"/session p99 {ms(p99['session'])}, /account p99 {ms(p99['account'])}, "
            f"{2 * len(dep['pair']) / dep['wall']:.0f} req/s",
            "SQLite rows above (one replica, no Slack load)",
            f"≤ {ms(TARGET_P99)}",
            max(p99.values()) <= TARGET_P99 and not bad,
        ),
    ]
    section.details.append(
        f"{len(acks)} acks and {len(dep['pair'])} pairs measured; both replicas together "
        f"{cpu:.1f} s of CPU; statuses other than 200: {bad}"
    )
