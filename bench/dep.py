"""The device assignment service: `/session` then `/account` pairs, and the signature check alone.

Pairs: `mdmbot serve --http --no-scheduler --dep-port` on SQLite seeded with 16 servers (one token
per load worker, as 16 MDM servers would hold), against the bare WSGI app of `bench.dep_bare`
(constant JSON on the same HTTP front and thread count), alternating rounds, 16 pairs in
flight from the `bench.dep_load` process. Signature: `core.dep.oauth` parsing the OAuth header
and verifying HMAC-SHA1 over RFC 5849's base string, against `hmac` + `base64` over a
precomputed base string in a loop (the physical floor of any HMAC-SHA1 check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client
from sqlmodel import select

from bench.ack import WORKERS, start_mdmbot
from bench.common import (
    ROOT,
    Row,
    Section,
    child_env,
    free_port,
    http_get,
    ms,
    percentile,
    python,
    run_client,
    stop_process,
    tree_cpu_seconds,
    wait_healthy,
)
from bench.dep_load import Spec
from bench.fake import start_fake
from bench.seed import add_servers, bench_settings
from bot.context import AppContext
from core.dep import oauth
from core.models import Token, TokenStatus

CONCURRENCY = 16
TARGET_P99 = 0.050
TARGET_SHARE = 0.65  # issue 35: ≥ 65% of the bare WSGI app's req/s
ROUNDS = {False: 3, True: 1}
PAIRS = {False: 1500, True: 300}
WARMUP_PAIRS = {False: 300, True: 100}
SIGNATURES = {False: 20_000, True: 4_000}


def _creds(ctx: AppContext) -> list[list[str]]:
    """The four credentials of every active token (what each MDM server decrypted)."""
    with ctx.unit_of_work(readonly=True) as session:
        tokens = session.exec(select(Token).where(Token.status == TokenStatus.ACTIVE)).all()
        out = []
        for token in tokens:
            secrets = json.loads(ctx.vault.decrypt(token.secrets))
            out.append(
                [
                    token.consumer_key,
                    secrets["consumer_secret"],
                    secrets["access_token"],
                    secrets["access_secret"],
                ]
            )
        return out


def _load(port: int, creds: list[list[str]], pairs: int) -> dict[str, Any]:
    spec = Spec("127.0.0.1", port, creds, CONCURRENCY, pairs, warmup=CONCURRENCY * 2)
    result = run_client("bench.dep_load", spec.__dict__, 300)
    if result["error_count"]:
        raise RuntimeError(f"dep load on {port}: {result['errors']}")
    return result


def _wait_dep(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if http_get(f"http://127.0.0.1:{port}/session") in (200, 400):
            return
        time.sleep(0.05)
    raise RuntimeError("the DEP listener did not answer")


def _pairs(quick: bool, section: Section) -> None:
    fake = start_fake()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    results: dict[str, list[dict[str, Any]]] = {"bare": [], "mdmbot": []}
    with tempfile.TemporaryDirectory(prefix="mdmbot-bench-dep-") as tmp:
        data = Path(tmp)
        ctx = AppContext(bench_settings(str(data), fake.url))
        ctx.prepare_database()
        add_servers(ctx, CONCURRENCY, datetime.now(UTC), prefix="District")
        creds = _creds(ctx)
        ctx.engine.dispose()
        ports = {"bare": free_port(), "mdmbot": free_port(), "slack": free_port()}
        try:
            processes["bare"] = subprocess.Popen(
                [
                    python(),
                    "-m",
                    "bench.dep_bare",
                    "--port",
                    str(ports["bare"]),
                    "--workers",
                    str(WORKERS),
                ],
                env=child_env({}),
                cwd=ROOT,
            )
            processes["mdmbot"] = start_mdmbot(
                fake,
                data,
                ports["slack"],
                WORKERS,
                "--dep-host",
                "127.0.0.1",
                "--dep-port",
                str(ports["mdmbot"]),
            )
            wait_healthy(f"http://127.0.0.1:{ports['slack']}/healthz", processes["mdmbot"])
            for name in ("bare", "mdmbot"):
                _wait_dep(ports[name], processes[name])
            for name in ("bare", "mdmbot"):  # warm-up, not measured: each worker's first requests
                _load(ports[name], creds, WARMUP_PAIRS[quick])
            for _ in range(ROUNDS[quick]):
                for name in ("bare", "mdmbot"):
                    cpu = tree_cpu_seconds(processes[name].pid)
                    result = _load(ports[name], creds, PAIRS[quick])
                    result["cpu"] = (tree_cpu_seconds(processes[name].pid) - cpu) / (
                        2 * result["sent"]
                    )
                    results[name].append(result)
        finally:
            for process in processes.values():
                stop_process(process)
            fake.stop()
    _report_pairs(section, results)


def _merged(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [value for run in runs for value in run[key]]


def _rate(runs: list[dict[str, Any]]) -> float:
    return float(sum(2 * len(run["pair"]) for run in runs) / sum(run["wall"] for run in runs))


def _report_pairs(section: Section, results: dict[str, list[dict[str, Any]]]) -> None:
    bot, bare = results["mdmbot"], results["bare"]
    p99 = {k: percentile(_merged(bot, k), 99) for k in ("session", "account", "pair")}
    b99 = {k: percentile(_merged(bare, k), 99) for k in ("session", "account", "pair")}
    share = _rate(bot) / _rate(bare)
    bad = {s: n for run in bot for s, n in run["statuses"].items() if s != "200"}
    section.rows += [
        Row(
            f"`/session` then `/account`, {CONCURRENCY} concurrent: p99 per request",
            f"/session {ms(p99['session'])}, /account {ms(p99['account'])}",
            f"bare: {ms(b99['session'])}, {ms(b99['account'])}",
            f"≤ {ms(TARGET_P99)}",
            max(p99["session"], p99["account"]) <= TARGET_P99 and not bad,
        ),
        Row(
            f"`/session` + `/account` pair, {CONCURRENCY} concurrent: p99",
            f"{ms(p99['pair'])}",
            f"bare: {ms(b99['pair'])}",
            "—",
            None,
        ),
        Row(
            f"DEP throughput, {CONCURRENCY} concurrent",
            f"{_rate(bot):.0f} req/s ({share:.0%} of bare)",
            f"bare WSGI app: {_rate(bare):.0f} req/s",
            f"≥ {TARGET_SHARE:.0%} of bare",
            share >= TARGET_SHARE and not bad,
        ),
    ]
    section.details.append(
        f"pairs: mdmbot {len(_merged(bot, 'pair'))} measured over {len(bot)} round(s), "
        f"p50 /session {ms(percentile(_merged(bot, 'session'), 50))}, /account "
        f"{ms(percentile(_merged(bot, 'account'), 50))}, "
        f"{ms(sum(r['cpu'] for r in bot) / len(bot))} server CPU/request "
        f"(bare {ms(sum(r['cpu'] for r in bare) / len(bare))}); statuses other than 200: {bad}"
    )


def _signature(quick: bool, section: Section) -> None:
    creds = ["CK_" + "a" * 96, "CS_" + "b" * 40, "AT_O1234567890O" + "c" * 40, "AS_" + "d" * 40]
    url = "http://dep.school.example/session"
    client = Client(creds[0], creds[1], creds[2], creds[3], signature_method=SIGNATURE_HMAC_SHA1)
    header = client.sign(url, "GET")[1]["Authorization"]
    count = SIGNATURES[quick]
    started = time.perf_counter()
    for _ in range(count):
        request = oauth.parse_oauth(header, "GET", [url])
        assert oauth.signature_valid(request, creds[1], creds[3])
    ours = (time.perf_counter() - started) / count
    request = oauth.parse_oauth(header, "GET", [url])
    started = time.perf_counter()
    for _ in range(count):
        oauth.signature_valid(request, creds[1], creds[3])
    verify = (time.perf_counter() - started) / count
    key = f"{creds[1]}&{creds[3]}".encode()
    base = b"GET&http%3A%2F%2Fdep.school.example%2Fsession&" + b"x" * 400
    started = time.perf_counter()
    for _ in range(count):
        base64.b64encode(hmac.new(key, base, hashlib.sha1).digest())
    raw = (time.perf_counter() - started) / count
    section.rows.append(
        Row(
            "OAuth signature check alone (parse header + HMAC-SHA1 verify)",
            f"{ours * 1e6:.1f} µs (verify only {verify * 1e6:.1f} µs; {ours / raw:.0f}× raw)",
            f"raw `hmac` SHA-1 + base64: {raw * 1e6:.2f} µs",
            "—",
            None,
        )
    )


def run(quick: bool) -> Section:
    """Both measurements."""
    section = Section("Device assignment service (`/session`, `/account`)")
    _signature(quick, section)
    _pairs(quick, section)
    return section
