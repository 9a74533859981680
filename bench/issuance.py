"""Token issuance per second: core against the raw `cryptography` envelope on the same content.

- raw: `PKCS7EnvelopeBuilder` alone (AES-128, one RSA recipient, Binary, DER) over a fixed
  token content, as the baseline;
- core: `build_token_file(generate_credentials(now), cert)`: fresh credentials, Apple's content
  layout, the envelope and the MIME/base64 wrapping;
- full: `servers.add_server` then `issuance.activate_token` through SQLite, each in its own unit of
  work as the bot does (certificate parsing, vault encryption of the secrets, audit rows, commits;
  no Slack). Apple allows 250 live certificates, so it starts a fresh database every 200 servers;
- PEM scanning: `load_certificate` on 64 KiB of `-----BEGIN A-----` (a hostile upload) against
  a real certificate, so that scanning stays linear in the file size.
The raw and core loops alternate in rounds so that drift in machine speed hits both alike.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization.pkcs7 import PKCS7EnvelopeBuilder, PKCS7Options

from bench.common import Row, Section, median
from bench.seed import OPERATOR, bench_settings, certificate
from bot.context import AppContext
from core.errors import CertificateError
from core.tokens import issuance, servers
from core.tokens.certificates import MAX_CERT_BYTES, load_certificate
from core.tokens.token_file import build_token_file, envelope, generate_credentials, render_content

TARGET_RATIO = 0.5
PEM_TARGET_MS = 50.0
PER_DATABASE = 200


def raw_envelope(content: bytes, cert: x509.Certificate) -> bytes:
    """The baseline: cryptography's CMS envelope alone."""
    return (
        PKCS7EnvelopeBuilder()
        .set_data(content)
        .set_content_encryption_algorithm(algorithms.AES128)
        .add_recipient(cert)
        .encrypt(Encoding.DER, [PKCS7Options.Binary])
    )


def rate(operation: Callable[[], object], count: int) -> float:
    """Operations per second over `count` calls."""
    started = time.perf_counter()
    for _ in range(count):
        operation()
    return count / (time.perf_counter() - started)


def interleaved(
    operations: dict[str, Callable[[], object]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Rates of each operation, measured in alternating rounds."""
    rates: dict[str, list[float]] = {name: [] for name in operations}
    for operation in operations.values():
        rate(operation, per_round // 4)  # warm up
    for _ in range(rounds):
        for name, operation in operations.items():
            rates[name].append(rate(operation, per_round))
    return rates


def full_path_rate(count: int, now: datetime) -> float:
    """add_server + activate_token per second through SQLite (fresh database every 200)."""
    pem = certificate(now).pem
    elapsed = 0.0
    done = 0
    while done < count:
        with tempfile.TemporaryDirectory(prefix="mdmbot-bench-issue-") as tmp:
            ctx = AppContext(bench_settings(tmp, "http://127.0.0.1:9/api/"))
            ctx.prepare_database()
            _ = ctx.vault
            batch = min(PER_DATABASE, count - done)
            started = time.perf_counter()
            for index in range(batch):
                with ctx.unit_of_work() as session:
                    token = servers.add_server(
                        session,
                        ctx.vault,
                        OPERATOR,
                        name=f"Issue {Path(tmp).name} {index}",
                        certificate=pem,
                        release_devices=True,
                        now=now,
                    )
                with ctx.unit_of_work() as session:
                    issuance.activate_token(session, OPERATOR, token.token_id, now)
            elapsed += time.perf_counter() - started
            ctx.engine.dispose()
            done += batch
    return done / elapsed


def parse_ms(data: bytes, now: datetime, repeats: int) -> float:
    """Median milliseconds `load_certificate` takes on `data` (refused or not)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            load_certificate(data, now=now)
        except CertificateError:
            pass
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def pem_row(now: datetime, repeats: int) -> Row:
    """Hostile PEM framing (64 KiB of BEGIN lines) against parsing a real certificate."""
    hostile = (b"-----BEGIN A-----" * (MAX_CERT_BYTES // 17 + 1))[:MAX_CERT_BYTES]
    hostile_ms = parse_ms(hostile, now, repeats)
    good_ms = parse_ms(certificate(now).pem, now, repeats)
    return Row(
        "`load_certificate` on 64 KiB of `-----BEGIN A-----` (refused)",
        f"{hostile_ms:.2f} ms",
        f"a real 2048-bit certificate PEM: {good_ms:.2f} ms",
        f"< {PEM_TARGET_MS:.0f} ms (was 2–5 s when scanning was quadratic)",
        hostile_ms < PEM_TARGET_MS,
    )


def run(quick: bool) -> Section:
    """Compare issuance rates."""
    rounds, per_round, full = (7, 200, 60) if quick else (21, 500, 400)
    now = datetime.now(UTC)
    cert = certificate(now).certificate
    content = render_content(generate_credentials(now))
    rates = interleaved(
        {
            "raw": lambda: raw_envelope(content, cert),
            "core": lambda: build_token_file(generate_credentials(now), cert),
            "envelope": lambda: envelope(content, cert),
            "content": lambda: render_content(generate_credentials(now)),
        },
        rounds,
        per_round,
    )
    raw, core = median(rates["raw"]), median(rates["core"])
    ratio = median([c / r for c, r in zip(rates["core"], rates["raw"], strict=True)])
    full_rate = full_path_rate(full, now)
    section = Section("Token issuance")
    section.rows.append(
        Row(
            "token files per second (`build_token_file(generate_credentials(now), cert)`)",
            f"{core:,.0f}/s ({ratio:.1%} of raw)",
            f"raw `PKCS7EnvelopeBuilder`: {raw:,.0f}/s",
            f"≥ {TARGET_RATIO:.0%} of raw",
            ratio >= TARGET_RATIO,
        )
    )
    section.rows.append(
        Row(
            "tokens issued per second through the database (`add_server` + `activate_token`)",
            f"{full_rate:,.0f}/s ({full_rate / raw:.1%} of raw)",
            f"raw `PKCS7EnvelopeBuilder`: {raw:,.0f}/s",
            "—",
            None,
        )
    )
    section.rows.append(pem_row(now, 5 if quick else 21))
    micro = {name: 1e6 / median(values) for name, values in rates.items()}
    section.details.append(
        f"per token file: raw envelope {micro['raw']:.0f} µs; `envelope()` (raw + MIME/base64 "
        f"lines) {micro['envelope']:.0f} µs; credentials + content layout {micro['content']:.0f} "
        f"µs; `build_token_file` in all {micro['core']:.0f} µs (median of {rounds} alternating "
        f"rounds of {per_round}; ratio is the median of the per-round ratios)"
    )
    section.details.append(
        f"full path: {1000 / full_rate:.1f} ms per server over {full} servers on SQLite "
        "(two commits each)"
    )
    return section
