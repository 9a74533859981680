"""Test data for the benchmarks: a certificate, and servers added through the core use cases."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bench.common import ALERT_CHANNEL, BOT_TOKEN, SECRET_KEY, SIGNING_SECRET
from bot.context import AppContext
from core.roles import Actor
from core.settings import Settings
from core.tokens import issuance, servers

OPERATOR = Actor("bench", operator=True)


@dataclass(frozen=True)
class BenchCertificate:
    """A self-signed 2048-bit RSA certificate like the ones MDM servers upload."""

    certificate: x509.Certificate
    pem: bytes


@functools.cache
def certificate(now: datetime) -> BenchCertificate:
    """A self-signed RSA certificate valid from 400 days before `now` to two years after."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mdm.bench.example.edu")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=730))
        .sign(key, hashes.SHA256())
    )
    return BenchCertificate(cert, cert.public_bytes(serialization.Encoding.PEM))


def bench_settings(data_dir: str, api_url: str, database_url: str | None = None) -> Settings:
    """Settings matching the environment given to benchmark subprocesses."""
    return Settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=api_url,
        mdmbot_data_dir=data_dir,
        mdmbot_database_url=database_url,
        mdmbot_secret_key=SECRET_KEY,
        mdmbot_alert_channel=ALERT_CHANNEL,
    )


def add_servers(ctx: AppContext, count: int, now: datetime, prefix: str = "Campus") -> None:
    """Add `count` servers with active tokens, issued over the past year so states vary."""
    pem = certificate(now).pem
    for index in range(count):
        issued = now - timedelta(days=(index * 7) % 380)
        with ctx.unit_of_work() as session:
            token = servers.add_server(
                session,
                ctx.vault,
                OPERATOR,
                name=f"{prefix} {index:03d} MDM",
                certificate=pem,
                release_devices=index % 3 != 0,
                now=issued,
            )
        with ctx.unit_of_work() as session:
            issuance.activate_token(session, OPERATOR, token.token_id, issued)
