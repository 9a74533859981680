"""Integration tests: the core use cases over a real database (SQLite and PostgreSQL).

Shared helpers live here: certificates valid at the fixed test clock, actors, and an
`openssl smime -decrypt` wrapper that opens token files the way an MDM server would.
"""

from __future__ import annotations

import functools
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, func, select

from core.roles import Actor
from tests import certs
from tests.conftest import NOW

OPERATOR = Actor("alice", operator=True)


@functools.cache
def rsa_cert(index: int = 0, *, subject: str = "mdm.example.edu") -> certs.CertAndKey:
    """A self-signed 2048-bit RSA certificate valid at NOW; distinct `index`, distinct key."""
    key = certs.rsa_key(2048, index)
    certificate = certs.build_certificate(
        key.public_key(), key, subject=subject, not_before=NOW - timedelta(days=1)
    )
    return certs.CertAndKey(certificate, key)


def wide(text: str) -> str:
    """The full-width form of ASCII text (A becomes U+FF21, and so on), spaces left as they are."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def count(session: Session, model: type[SQLModel]) -> int:
    """The number of rows of a table."""
    return session.exec(select(func.count()).select_from(model)).one()


def row_counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table, read in a fresh connection (what another process would see)."""
    with engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def smime_decrypt(content: bytes, key_pem: bytes, tmp_path: Path) -> bytes:
    """Decrypt a token file with `openssl smime -decrypt`, as an MDM server's operator would."""
    token_file = tmp_path / f"token-{uuid.uuid4().hex}.p7m"
    key_file = tmp_path / "key.pem"
    token_file.write_bytes(content)
    key_file.write_bytes(key_pem)
    result = subprocess.run(
        ["openssl", "smime", "-decrypt", "-in", str(token_file), "-inkey", str(key_file)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"openssl could not decrypt: {result.stderr.decode(errors='replace')}")
    return result.stdout
