"""Public key certificates uploaded for an MDM server: parse, check Apple's rules, describe."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from core.errors import CertificateError

MAX_CERT_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
EXPIRES_SOON = timedelta(days=30)

_T = TypeVar("_T")

_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]+)-----")
_CERT_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"})
_CSR_LABELS = frozenset({b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"})
_PUBLIC_KEY_LABELS = frozenset({b"PUBLIC KEY", b"RSA PUBLIC KEY"})
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")

_NOT_A_CERTIFICATE = (
    "This file is not a public key certificate; upload the certificate file (.pem, .der, .cer "
    "or .crt) your MDM server gives you."
)
_PRIVATE_KEY = (
    "This is a private key — upload the public key certificate instead; "
    "keep the private key on the MDM server."
)
_KEY_SHARED = (
    "This file also holds a private key: only its certificate was used. The private key should "
    "never leave the MDM server; consider it exposed and make a new key pair."
)
_CSR = (
    "This is a certificate signing request, not a certificate; upload the public key "
    "certificate your MDM server gives you."
)
_PUBLIC_KEY = (
    "This is a bare public key, not a certificate; upload the .pem or .der public key "
    "certificate your MDM server gives you."
)
_KEY_NAMES: tuple[tuple[type, str], ...] = (
    (ec.EllipticCurvePublicKey, "an EC key"),
    (dsa.DSAPublicKey, "a DSA key"),
    (ed25519.Ed25519PublicKey, "an Ed25519 key"),
    (ed448.Ed448PublicKey, "an Ed448 key"),
    (x25519.X25519PublicKey, "an X25519 key"),
    (x448.X448PublicKey, "an X448 key"),
)


@dataclass(frozen=True)
class LoadedCertificate:
    """A certificate that passed Apple's rules, with what mdmbot stores and shows about it."""

    certificate: x509.Certificate
    pem: str
    fingerprint_sha256: str
    subject: str
    not_after: datetime
    key_bits: int
    warnings: tuple[str, ...]


def _attempt(action: Callable[[], _T], message: str) -> _T:
    """Run a cryptography call and turn any failure into a CertificateError with message."""
    try:
        return action()
    except Exception as exc:
        raise CertificateError(message) from exc


def _is_private_key_der(data: bytes) -> bool:
    """Return whether DER bytes hold a (possibly encrypted) private key."""
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:
        return True
    except Exception:
        return False
    return True


def _is_csr_der(data: bytes) -> bool:
    """Return whether DER bytes hold a certificate signing request."""
    try:
        x509.load_der_x509_csr(data)
    except Exception:
        return False
    return True


def _parse_der_certificate(data: bytes) -> x509.Certificate | None:
    """Return the certificate DER bytes hold, or None if they hold none."""
    try:
        return x509.load_der_x509_certificate(data)
    except Exception:
        return None


def pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (label, body) of each complete PEM block, in one pass over the markers (RFC 7468)."""
    blocks: list[tuple[bytes, bytes]] = []
    opened: tuple[bytes, int] | None = None
    for marker in _PEM_MARKER.finditer(data):
        kind, label = marker.group(1), marker.group(2)
        if kind == b"BEGIN":
            opened = (label, marker.end())
        elif opened is not None and opened[0] == label:
            blocks.append((label, data[opened[1] : marker.start()]))
            opened = None
    return blocks


def _from_pem(data: bytes) -> x509.Certificate:
    """Return the first certificate of a PEM file, refusing keys alone and requests."""
    blocks = pem_blocks(data)
    labels = {label for label, _ in blocks}
    certificates = [body for label, body in blocks if label in _CERT_LABELS]
    if not certificates:
        if any(label.endswith(b"PRIVATE KEY") for label in labels):
            raise CertificateError(_PRIVATE_KEY)
        if labels & _CSR_LABELS:
            raise CertificateError(_CSR)
        if labels & _PUBLIC_KEY_LABELS:
            raise CertificateError(_PUBLIC_KEY)
        raise CertificateError(_NOT_A_CERTIFICATE)
    damaged = (
        "The certificate in this PEM file is damaged; export it again and upload the new file."
    )
    der = _attempt(
        lambda: base64.b64decode(b"".join(certificates[0].split()), validate=True), damaged
    )
    return _attempt(lambda: x509.load_der_x509_certificate(der), damaged)


def _from_der(data: bytes) -> x509.Certificate:
    """Return the certificate in DER bytes (or bare base64 of DER), refusing keys and requests."""
    candidates = [data]
    if _BASE64_TEXT.fullmatch(data):
        try:
            candidates.append(base64.b64decode(b"".join(data.split()), validate=True))
        except binascii.Error:
            pass
    for candidate in candidates:
        certificate = _parse_der_certificate(candidate)
        if certificate is not None:
            return certificate
    for candidate in candidates:
        if _is_private_key_der(candidate):
            raise CertificateError(_PRIVATE_KEY)
        if _is_csr_der(candidate):
            raise CertificateError(_CSR)
    raise CertificateError(_NOT_A_CERTIFICATE)


def _rsa_bits(certificate: x509.Certificate) -> int:
    """Return the RSA key size, refusing other key types and keys under MIN_RSA_BITS."""
    algorithm = _attempt(
        lambda: certificate.public_key_algorithm_oid, "This certificate's public key can't be read."
    )
    unsupported = (
        "Apple can't send tokens to this certificate: its key is of an unknown type "
        f"(OID {algorithm.dotted_string}); make a new certificate with the usual (RSA) key."
    )
    key = _attempt(certificate.public_key, unsupported)
    if not isinstance(key, rsa.RSAPublicKey):
        kind = next((name for cls, name in _KEY_NAMES if isinstance(key, cls)), "a non-RSA key")
        # Apple's envelope uses RSA key transport, so only RSA certificates can receive a token.
        raise CertificateError(
            f"Apple can't send tokens to this certificate: its key is {kind}; make a new "
            "certificate with the usual (RSA) key."
        )
    if key.key_size < MIN_RSA_BITS:
        raise CertificateError(
            f"This certificate's key is too short ({key.key_size} bits); Apple requires "
            f"{MIN_RSA_BITS} bits or more: make a new certificate on the MDM server."
        )
    return key.key_size


def _warnings(certificate: x509.Certificate, now: datetime) -> tuple[str, ...]:
    """Return the warnings (not refusals) a certificate's validity dates call for."""
    unreadable = "This certificate's validity dates can't be read."
    not_before = _attempt(lambda: certificate.not_valid_before_utc, unreadable)
    not_after = _attempt(lambda: certificate.not_valid_after_utc, unreadable)
    found: list[str] = []
    if not_after < now:
        found.append(
            f"This certificate expired on {not_after:%Y-%m-%d}; Apple accepts it, "
            "but check that your MDM server still uses this key."
        )
    elif not_after - now <= EXPIRES_SOON < not_after - not_before:  # short-lived ones are normal
        found.append(
            f"This certificate expires on {not_after:%Y-%m-%d}, within "
            f"{EXPIRES_SOON.days} days; get a new one from your MDM server soon."
        )
    if not_before > now:
        found.append(f"This certificate is not valid until {not_before:%Y-%m-%d}.")
    return tuple(found)


def load_certificate(data: bytes, *, now: datetime) -> LoadedCertificate:
    """Parse an uploaded PEM or DER certificate and check it against Apple's rules."""
    try:
        return _load(data, now)
    except CertificateError:
        raise
    except Exception as exc:
        raise CertificateError(_NOT_A_CERTIFICATE) from exc
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise CertificateError(_NOT_A_CERTIFICATE) from None


def _load(data: bytes, now: datetime) -> LoadedCertificate:
    """Do the work of load_certificate; any error but CertificateError is a bug to contain."""
    if not data.strip():
        raise CertificateError("This file is empty; upload the public key certificate.")
    if len(data) > MAX_CERT_BYTES:
        raise CertificateError(
            f"This file is {len(data) // 1024} KiB; a public key certificate is at most "
            f"{MAX_CERT_BYTES // 1024} KiB."
        )
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(_HTML_STARTS) or b"<html" in head:
        raise CertificateError(
            "This file looks like a web page (perhaps a sign-in page), not a certificate; "
            "download the certificate again and upload that file."
        )
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    certificate = _from_pem(data) if b"-----BEGIN " in data else _from_der(data)
    key_bits = _rsa_bits(certificate)
    warnings = _warnings(certificate, now)
    if b"-----BEGIN " in data and any(
        label.endswith(b"PRIVATE KEY") for label, _ in pem_blocks(data)
    ):
        warnings = (_KEY_SHARED, *warnings)
    unreadable = "This certificate can't be read; export it again and upload the new file."
    return LoadedCertificate(
        certificate=certificate,
        pem=_attempt(
            lambda: certificate.public_bytes(serialization.Encoding.PEM), unreadable
        ).decode("ascii"),
        fingerprint_sha256=_attempt(
            lambda: certificate.fingerprint(hashes.SHA256()), unreadable
        ).hex(),
        subject=_attempt(lambda: certificate.subject.rfc4514_string(), unreadable),
        not_after=_attempt(lambda: certificate.not_valid_after_utc, unreadable),
        key_bits=key_bits,
        warnings=warnings,
    )
