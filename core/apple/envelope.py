"""Apple's server token file read without its private key: the envelope and who it is for.

A server token is CMS EnvelopedData (RFC 5652 §6) in an S/MIME file (DESIGN.md §3). Its one
KeyTransRecipientInfo names the MDM server's certificate by issuer and serial number, which is
all mdmbot can check without the private key. A small DER reader does it (no ASN.1 library is a
dependency).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from core.errors import InvalidInput
from core.settings import SCHOOL_PORTAL
from core.tokens.token_file import add_one_year

MAX_BYTES = 64 * 1024  # Apple's token files are about 3 KiB
ENVELOPED_DATA = bytes.fromhex("2a864886f70d010703")  # OID 1.2.840.113549.1.7.3
_SEQUENCE, _SET, _INTEGER, _OID, _CONTEXT_0 = 0x30, 0x31, 0x02, 0x06, 0xA0
_NAME_TIME = re.compile(r"_Token_(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z_smime")
NOT_APPLES_FILE = (
    "“{name}” is not a server token from {portal} (an S/MIME .p7m file); "
    "download the server token again and drop that file."
)


class _Malformed(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True)
class Recipient:
    """Whom the envelope is encrypted to: a certificate's issuer (DER) and serial number."""

    issuer: bytes = field(repr=False)
    serial: int


@dataclass(frozen=True)
class TokenEnvelope:
    """A server token file as taken in: its DER, its recipients, and what its name tells."""

    filename: str
    der: bytes = field(repr=False)
    recipients: tuple[Recipient, ...]
    named_issue: datetime | None  # the UTC time in Apple's file name, if it has one
    portal: str = SCHOOL_PORTAL  # the Apple portal it was downloaded from, for messages

    @property
    def named_expiry(self) -> datetime | None:
        """The expiry Apple's file name implies: its issue time plus one year."""
        return add_one_year(self.named_issue) if self.named_issue else None


def _read(data: bytes, pos: int, depth: int = 0) -> tuple[int, int, int, int]:
    """The tag, content start, content end and element end of the element at `pos`.

    Apple's own token files use BER's indefinite lengths (ended by two zero bytes), so those
    are read too (constructed elements only, as X.690 §8.1.3.6 allows)."""
    if pos + 2 > len(data) or depth > 32:
        raise _Malformed("truncated")
    tag, length = data[pos], data[pos + 1]
    start = pos + 2
    if length == 0x80:
        if not tag & 0x20:
            raise _Malformed("indefinite length on a primitive element")
        inner = start
        while data[inner : inner + 2] != b"\0\0":
            inner = _read(data, inner, depth + 1)[3]
        return tag, start, inner, inner + 2
    if length & 0x80:
        count = length & 0x7F
        if count > 4 or start + count > len(data):
            raise _Malformed("oversized length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise _Malformed("truncated")
    return tag, start, end, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside [start, end): (tag, element start, content start, content end)."""
    found, pos = [], start
    while pos < end:
        tag, begin, stop, after = _read(data, pos)
        found.append((tag, pos, begin, stop))
        pos = after
    if pos != end:
        raise _Malformed("overrun")
    return found


def _expect(tag: int, wanted: int) -> None:
    if tag != wanted:
        raise _Malformed(f"tag {tag:#x}, expected {wanted:#x}")


def recipients_of(der: bytes) -> tuple[Recipient, ...]:
    """The issuer-and-serial recipients of a CMS EnvelopedData ContentInfo (ValueError if not)."""
    tag, start, end, after = _read(der, 0)
    _expect(tag, _SEQUENCE)
    if after != len(der):
        raise _Malformed("trailing bytes")
    info = _children(der, start, end)
    if len(info) != 2 or info[0][0] != _OID or der[info[0][2] : info[0][3]] != ENVELOPED_DATA:
        raise _Malformed("not enveloped-data")
    _expect(info[1][0], _CONTEXT_0)
    inner = _children(der, info[1][2], info[1][3])
    if len(inner) != 1:
        raise _Malformed("content")
    _expect(inner[0][0], _SEQUENCE)
    parts = _children(der, inner[0][2], inner[0][3])
    sets = [p for p in parts[1:3] if p[0] == _SET]  # after the version and originatorInfo
    if parts[0][0] != _INTEGER or not sets:
        raise _Malformed("enveloped-data fields")
    found = []
    for tag, _, begin, stop in _children(der, sets[0][2], sets[0][3]):
        if tag != _SEQUENCE:
            continue  # another kind of recipient (key agreement, password…): not Apple's
        rid = _children(der, begin, stop)
        if len(rid) < 2 or rid[1][0] != _SEQUENCE:
            continue  # identified by subject key identifier: Apple names issuer and serial
        issuer, serial = _children(der, rid[1][2], rid[1][3])[:2]
        _expect(issuer[0], _SEQUENCE)
        _expect(serial[0], _INTEGER)
        found.append(
            Recipient(
                der[issuer[1] : issuer[3]],
                int.from_bytes(der[serial[2] : serial[3]], "big", signed=True),
            )
        )
    return tuple(found)


def issuer_der(certificate: x509.Certificate) -> bytes:
    """The certificate's issuer Name exactly as encoded in it (tbsCertificate's fourth field)."""
    tbs = certificate.tbs_certificate_bytes
    _, start, end, _ = _read(tbs, 0)
    fields = _children(tbs, start, end)
    if fields and fields[0][0] == _CONTEXT_0:  # [0] version, present in v3 certificates
        fields = fields[1:]
    _, begin, _, stop = fields[2]
    return tbs[begin:stop]


def is_for(envelope: TokenEnvelope, certificate: x509.Certificate) -> bool:
    """Whether the token is encrypted to this certificate (issuer and serial number match)."""
    wanted = Recipient(issuer_der(certificate), certificate.serial_number)
    return wanted in envelope.recipients


def _der_of(data: bytes) -> bytes:
    """The DER inside a token file: Apple's MIME layout, PEM, bare base64 or DER itself."""
    if data[:1] == bytes([_SEQUENCE]):
        return data
    text = data.replace(b"\r\n", b"\n")
    if b"-----BEGIN" in text:
        lines = [ln for ln in text.split(b"\n") if ln and not ln.startswith(b"-----")]
        body = b"".join(lines)
    else:
        head, blank, rest = text.partition(b"\n\n")
        body = rest if blank and b"content-type" in head.lower() else text
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Malformed("not base64") from exc


def named_issue_time(filename: str) -> datetime | None:
    """The UTC issue time in Apple's file name `…_Token_<YYYY-MM-DDTHH-MM-SSZ>_smime.p7m`."""
    found = _NAME_TIME.search(filename)
    if found is None:
        return None
    day, hour, minute, second = found.groups()
    try:
        return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}").replace(tzinfo=UTC)
    except ValueError:
        return None


def read_token_file(data: bytes, filename: str, portal: str = SCHOOL_PORTAL) -> TokenEnvelope:
    """The file as a server token, or InvalidInput in one line naming the file and Apple's
    `portal` it comes from."""
    shown = filename.rsplit("/", 1)[-1] or "the file"
    if len(data) > MAX_BYTES:
        raise InvalidInput(
            f"“{shown}” is {len(data) // 1024} KiB; a server token file is a few KiB. "
            f"Download the server token from {portal} and drop that file."
        )
    try:
        der = _der_of(data)
        recipients = recipients_of(der)
    except (_Malformed, IndexError, ValueError) as exc:
        raise InvalidInput(NOT_APPLES_FILE.format(name=shown, portal=portal)) from exc
    if not recipients:
        raise InvalidInput(
            f"“{shown}” is encrypted to no MDM server certificate mdmbot can name; download "
            f"the server token from {portal} and drop that file."
        )
    return TokenEnvelope(shown, der, recipients, named_issue_time(shown), portal)
