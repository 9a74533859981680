"""The served School Manager API at district scale: `GET /v1/orgDevices?limit=1000` walked over
100,000 devices through the real Apple-port listener, on SQLite and (when configured) PostgreSQL.

Each page is one HTTP request on a new connection (as `curl` or a script makes them) with a
Bearer token, following `links.next`; the figure is the time from sending to the last byte.
Baseline: the same page read with OFFSET paging (`ORDER BY serial_number OFFSET n LIMIT 1000`),
which keyset cursors avoid, timed in-process without HTTP or JSON. A detail line gives the CPU
time of each page served by calling the WSGI app in-process (`time.thread_time`): on a machine
shared with other work, wall-clock latency measures the neighbours, CPU time the code.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from bench.common import Row, Section, median, ms, percentile
from bench.devices import fill
from bench.seed import bench_settings
from bot.asm.app import apple_port_app
from bot.context import AppContext
from bot.dep.app import build_dep_app
from bot.http import Listener, WsgiApp, start_in_background
from core.asm import accounts
from core.asm.models import ApiAccessToken, ApiAccount
from core.asm.oauth import digest
from core.roles import Actor

TOTAL, PAGE = 100_000, 1_000
TARGET = 0.100
NEXT = re.compile(rb'"next":"([^"]+)"')


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


def walk(base: str, token: str) -> tuple[list[float], int]:
    """Every page of one full walk: seconds per page, devices seen."""
    times, seen, url = [], 0, f"{base}/v1/orgDevices?limit={PAGE}"
    while url:
        request = urllib.request.Request(  # noqa: S310 (127.0.0.1)
            url, headers={"Authorization": f"Bearer {token}"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (127.0.0.1)
            page = response.read()
        times.append(time.perf_counter() - started)
        seen += page.count(b'"type":"orgDevices"')
        url = next_link(page)
    return times, seen


def next_link(page: bytes) -> str:
    """`links.next` of a page, found without parsing it: the server under test shares this
    process, and parsing 600 kB of JSON per page here would load its garbage collector."""
    found = NEXT.search(page)
    return found[1].decode() if found else ""


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
        query = next_link(body).partition("?")[2]
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
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _measure(section: Section, name: str, url: str, tmp: str, walks: int) -> None:
    engine, built = fill(url, TOTAL)
    ctx = AppContext(bench_settings(tmp, "http://127.0.0.1:9/", url))
    token = _token(ctx)
    app = apple_port_app(ctx, build_dep_app(ctx))
    server = start_in_background(Listener("bench-asm", "127.0.0.1", 0, app), 4)
    try:
        base = f"http://127.0.0.1:{server.port}"
        results = [walk(base, token) for _ in range(walks)]
        cpu = [t for _ in range(walks) for t in cpu_walk(app, token)]
    finally:
        server.close()
        ctx.engine.dispose()
    pages = [t for times, _ in results for t in times]
    offsets = [offset_page(engine, (TOTAL - PAGE) * i // 4) for i in range(5) for _ in range(2)]
    engine.dispose()
    p99 = percentile(pages, 99)
    section.rows.append(
        Row(
            f"School Manager API: `GET /v1/orgDevices?limit=1000` page, {TOTAL:,} devices, {name}",
            f"p50 {ms(median(pages))}, p99 {ms(p99)}",
            f"OFFSET page in-process: p50 {ms(median(offsets))}, max {ms(max(offsets))}",
            f"p99 ≤ {ms(TARGET)}",
            p99 <= TARGET and all(seen == TOTAL for _, seen in results),
        )
    )
    section.details.append(
        f"{name}: {walks} full walks of {len(results[0][0])} pages each, every walk saw "
        f"{results[0][1]:,} devices; seeding took {built:.1f} s; CPU per page served "
        f"in-process: p50 {ms(median(cpu))}, p99 {ms(percentile(cpu, 99))}"
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
