"""The served School Manager API at district scale: `GET /v1/orgDevices?limit=1000` walked over
100,000 devices through the real Apple-port listener, on SQLite and (when configured) PostgreSQL.

The server is `mdmbot serve --no-slack --dep-port` in its own process; the client is
`bench.asm_walk` in another, so the figure measures the server, not a client sharing its GIL.
Each page is one request on a new connection (as `curl` or a script makes them) with a Bearer
token, following `links.next`; the figure is the time from connecting to the last byte. One walk
warms the server up and is not counted. The database is analysed after seeding, as PostgreSQL's
autovacuum does after an import (without statistics PostgreSQL sorts the whole table per page).
Baseline: the same page read with OFFSET paging (`ORDER BY serial_number OFFSET n LIMIT 1000`),
which keyset cursors avoid, timed in-process without HTTP or JSON. Details give the CPU time per
page of the server process (HTTP included) and of the WSGI app called in-process
(`time.thread_time`): on a machine shared with other work, wall-clock latency measures the
neighbours too, CPU time the code.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from bench.asm_walk import NEXT
from bench.common import (
    SECRET_KEY,
    Row,
    Section,
    child_env,
    free_port,
    median,
    ms,
    percentile,
    pg_schema,
    python,
    run_client,
    stop_process,
    tree_cpu_seconds,
    wait_healthy,
)
from bench.devices import fill
from bench.seed import bench_settings
from bot.asm.app import apple_port_app
from bot.context import AppContext
from bot.dep.app import build_dep_app
from core.asm import accounts
from core.asm.models import ApiAccessToken, ApiAccount
from core.asm.oauth import digest
from core.roles import Actor

TOTAL, PAGE = 100_000, 1_000
TARGET = 0.100


def _token(ctx: AppContext) -> str:
    """An API account and an access token for it, made as the token endpoint makes them."""
    now = datetime.now(UTC)
    with ctx.unit_of_work() as session:
        made = accounts.create_account(session, Actor("bench", operator=True), "bench",
                                       "school", now)  # fmt: skip
        account_id = session.exec(
            select(ApiAccount.id).where(ApiAccount.client_id == made.account.client_id)
        ).one()
        assert account_id is not None
        token = uuid.uuid4().hex
        expires = now + timedelta(hours=1)
        session.add(
            ApiAccessToken(
                token_hash=digest(token), account_id=account_id, created_at=now, expires_at=expires
            )
        )
    return token


def serve(url: str, data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    """`mdmbot serve --no-slack --dep-port` on the database at `url`: (process, Apple port)."""
    apple, health = free_port(), free_port()
    log = (Path(data_dir) / "serve.log").open("wb")
    command = [python(), "-m", "bot.cli", "serve", "--no-slack", "--no-scheduler",
               "--host", "127.0.0.1", "--port", str(health), "--metrics-port", str(free_port()),
               "--dep-host", "127.0.0.1", "--dep-port", str(apple)]  # fmt: skip
    env = {"MDMBOT_DATABASE_URL": url, "MDMBOT_DATA_DIR": data_dir,
           "MDMBOT_SECRET_KEY": SECRET_KEY, "MDMBOT_ASM_API_RATE": "100000"}  # fmt: skip
    process = subprocess.Popen(
        command, cwd=data_dir, env=child_env(env), stdout=log, stderr=subprocess.STDOUT
    )
    wait_healthy(f"http://127.0.0.1:{health}/healthz", process)
    return process, apple


def walk(port: int, token: str, walks: int) -> tuple[list[list[float]], list[int]]:
    """`walks` full walks by the `bench.asm_walk` process: seconds per page, devices seen."""
    spec = {"host": "127.0.0.1", "port": port, "token": token, "walks": walks, "limit": PAGE}
    result = run_client("bench.asm_walk", spec, 600)
    return result["pages"], result["seen"]


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def cpu_walk(app: WsgiApp, token: str) -> list[float]:
    """CPU seconds of each page of one walk, the WSGI app called in this thread."""
    times, query = [], f"limit={PAGE}"
    while query:
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": "/v1/orgDevices", "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
            "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {token}",
        }  # fmt: skip
        started = time.thread_time()
        body = b"".join(app(environ, lambda status, headers, exc_info=None: None))
        times.append(time.thread_time() - started)
        found = NEXT.search(body)
        query = found[1].decode().partition("?")[2] if found else ""
    return times


def offset_page(engine: sa.Engine, offset: int) -> float:
    """Seconds to read one page with OFFSET paging."""
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execute(
            sa.text(
                "SELECT * FROM device WHERE released_at IS NULL ORDER BY serial_number "
                "LIMIT :page OFFSET :offset"
            ),
            {"page": PAGE, "offset": offset},
        ).all()
    return time.perf_counter() - started


@contextmanager
def _postgres() -> Iterator[str | None]:
    base = os.environ.get("MDMBOT_BENCH_DATABASE_URL") or os.environ.get("MDMBOT_TEST_DATABASE_URL")
    if not base or not base.startswith("postgresql"):
        yield None
        return
    with pg_schema(base) as url:
        yield url


def _measure(section: Section, name: str, url: str, tmp: str, walks: int) -> None:
    engine, built = fill(url, TOTAL)
    with engine.begin() as connection:  # committed: `fill` analyses in a transaction it rolls back
        connection.exec_driver_sql("ANALYZE")
    ctx = AppContext(bench_settings(tmp, "http://127.0.0.1:9/", url))
    token = _token(ctx)
    server, port = serve(url, tmp)
    try:
        walk(port, token, 1)  # warm-up, not counted
        cpu = tree_cpu_seconds(server.pid)
        results, seen = walk(port, token, walks)
        pages = [t for times in results for t in times]
        served = (tree_cpu_seconds(server.pid) - cpu) / len(pages)
    finally:
        stop_process(server)
    app = apple_port_app(ctx, build_dep_app(ctx))
    cpu_walk(app, token)  # warm-up
    handler = [t for _ in range(walks) for t in cpu_walk(app, token)]
    ctx.engine.dispose()
    offsets = [offset_page(engine, (TOTAL - PAGE) * i // 4) for i in range(5) for _ in range(2)]
    engine.dispose()
    p99 = percentile(pages, 99)
    section.rows.append(
        Row(
            f"School Manager API: `GET /v1/orgDevices?limit=1000` page, {TOTAL:,} devices, {name}",
            f"p50 {ms(median(pages))}, p99 {ms(p99)}",
            f"OFFSET page in-process: p50 {ms(median(offsets))}, max {ms(max(offsets))}",
            f"p99 ≤ {ms(TARGET)}",
            p99 <= TARGET and all(count == TOTAL for count in seen),
        )
    )
    section.details.append(
        f"{name}: {walks} full walks of {len(results[0])} pages each (after one warm-up walk), "
        f"every walk saw {seen[0]:,} devices; seeding took {built:.1f} s; server process CPU "
        f"per page (HTTP included): {ms(served)}; CPU per page of the WSGI app in-process: "
        f"p50 {ms(median(handler))}, p99 {ms(percentile(handler, 99))}"
    )


def run(quick: bool) -> Section:
    """Walk the device list over HTTP on SQLite and, when configured, PostgreSQL."""
    section = Section("School Manager API (`bot/asm`, `core/asm`): device pages")
    walks = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="mdmbot-bench-asm-") as tmp:
        _measure(section, "SQLite", f"sqlite:///{Path(tmp) / 'asm.db'}", tmp, walks)
        with _postgres() as url:
            if url is None:
                section.details.append("PostgreSQL skipped: MDMBOT_BENCH_DATABASE_URL is not set")
            else:
                _measure(section, "PostgreSQL", url, tmp, walks)
    return section
