"""Server token files laid out byte for byte like the ones Apple School Manager issues."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization.pkcs7 import PKCS7EnvelopeBuilder, PKCS7Options

from core.tokens.names import safe_filename

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTENT_HEADER = (
    b"Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
)
_BEGIN = b"-----BEGIN MESSAGE-----\n"
_END = b"-----END MESSAGE-----\n"
_FIELDS = (
    "consumer_key",
    "consumer_secret",
    "access_token",
    "access_secret",
    "access_token_expiry",
)
_ENVELOPE_HEADER = (
    b'Content-Type: application/pkcs7-mime; name="smime.p7m"; smime-type=enveloped-data\n'
    b"Content-Transfer-Encoding: base64\n"
    b'Content-Disposition: attachment; filename="smime.p7m"\n'
    b"Content-Description: S/MIME Encrypted Message\n"
    b"\n"
)


@dataclass(frozen=True)
class TokenCredentials:
    """The four OAuth credentials of one server token, with its issue and expiry times."""

    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_secret: str = field(repr=False)
    issued_at: datetime
    expires_at: datetime


def add_one_year(moment: datetime) -> datetime:
    """Return the same moment one calendar year later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + 1)
    except ValueError:
        return moment.replace(year=moment.year + 1, day=28)


def _hex(characters: int) -> str:
    """Return `characters` random lowercase hex digits."""
    return secrets.token_hex(characters // 2)


def new_consumer_key() -> str:
    """A fresh random consumer key (`CK_` + 96 hex), drawn once per MDM server."""
    return f"CK_{_hex(96)}"


def generate_credentials(issued_at: datetime, consumer_key: str | None = None) -> TokenCredentials:
    """Fresh credentials issued at `issued_at` (to the millisecond, UTC), keeping `consumer_key`."""
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    issued = issued_at.astimezone(UTC)
    issued = issued.replace(microsecond=issued.microsecond // 1000 * 1000)
    epoch_ms = (issued - _EPOCH) // timedelta(milliseconds=1)
    number = 10**9 + secrets.randbelow(9 * 10**9)
    digits = _hex(96 + 40 + 40 + 40)
    return TokenCredentials(
        consumer_key=consumer_key or f"CK_{digits[:96]}",
        consumer_secret=f"CS_{digits[96:136]}",
        access_token=f"AT_O{number}O{digits[136:176]}O{epoch_ms}",
        access_secret=f"AS_{digits[176:]}",
        issued_at=issued,
        expires_at=add_one_year(issued).replace(microsecond=0),
    )


def render_content(creds: TokenCredentials) -> bytes:
    """Return the decrypted token content exactly as Apple lays it out (values need no escaping)."""
    expiry = creds.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    values = (
        creds.consumer_key,
        creds.consumer_secret,
        creds.access_token,
        creds.access_secret,
        expiry,
    )
    body = "{" + ",".join(f'"{k}":"{v}"' for k, v in zip(_FIELDS, values, strict=True)) + "}"
    return _CONTENT_HEADER + _BEGIN + body.encode("ascii") + b"\n" + _END


def parse_content(content: bytes) -> dict[str, str]:
    """Return the JSON fields of decrypted token content, raising ValueError if it is malformed."""
    start = content.find(_BEGIN.strip())
    end = content.find(_END.strip())
    if start < 0 or end < start:
        raise ValueError("token content has no BEGIN/END MESSAGE block")
    parsed = json.loads(content[start + len(_BEGIN.strip()) : end])
    if not isinstance(parsed, dict) or list(parsed) != list(_FIELDS):
        raise ValueError("token content does not hold the five expected fields in order")
    if not all(isinstance(value, str) for value in parsed.values()):
        raise ValueError("token content fields must be strings")
    return {str(key): str(value) for key, value in parsed.items()}


def envelope(content: bytes, certificate: x509.Certificate) -> bytes:
    """Encrypt content to the certificate as an S/MIME file laid out like Apple's.

    CMS EnvelopedData, AES-128-CBC content, RSA PKCS#1 v1.5 key transport to the
    certificate's issuer and serial. Lines end in LF, like Apple's token in the fixtures and
    like OpenSSL's S/MIME writer; the base64 body is in 76-character lines.
    """
    der = (
        PKCS7EnvelopeBuilder()
        .set_data(content)
        .set_content_encryption_algorithm(algorithms.AES128)
        .add_recipient(certificate)
        .encrypt(Encoding.DER, [PKCS7Options.Binary])
    )
    return wrap_der(der)


def wrap_der(der: bytes) -> bytes:
    """The S/MIME file around an EnvelopedData DER: Apple's four headers, base64 in 76 columns."""
    return _ENVELOPE_HEADER + base64.encodebytes(der)


def token_filename(server_name: str, issued_at: datetime) -> str:
    """Return Apple's file name for a token: `<server>_Token_<UTC issue time>_smime.p7m`."""
    stamp = f"{issued_at.astimezone(UTC):%Y-%m-%dT%H-%M-%SZ}"
    return f"{safe_filename(server_name)}_Token_{stamp}_smime.p7m"


def build_token_file(creds: TokenCredentials, certificate: x509.Certificate) -> bytes:
    """Return the token file for creds, encrypted to the MDM server's certificate."""
    return envelope(render_content(creds), certificate)
