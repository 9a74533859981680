"""Test certificates, keys and requests made with `cryptography` (keys are cached per process)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

NOW = datetime(2027, 11, 27, 14, 3, 34, tzinfo=UTC)
# A real token Apple issued, with its key and certificate (see the folder's README.md).
APPLE_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "apple-server-token"


@dataclass(frozen=True)
class CertAndKey:
    """A certificate with the private key of its subject."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def pem(self) -> bytes:
        """Return the certificate as PEM."""
        return cert_pem(self.certificate)

    @property
    def der(self) -> bytes:
        """Return the certificate as DER."""
        return cert_der(self.certificate)

    @property
    def key_pem(self) -> bytes:
        """Return the private key as unencrypted PKCS#8 PEM."""
        return private_key_pem(self.key)


@functools.cache
def rsa_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    """Return a cached RSA key of `bits` bits; different `index` values give different keys."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    """Return a cached P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def dsa_key() -> dsa.DSAPrivateKey:
    """Return a cached 2048-bit DSA key."""
    return dsa.generate_private_key(key_size=2048)


@functools.cache
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    """Return a cached Ed25519 key."""
    return ed25519.Ed25519PrivateKey.generate()


def _name(common_name: str) -> x509.Name:
    """Return an X.509 name with one CN."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def build_certificate(
    public_key: CertificatePublicKeyTypes,
    signing_key: CertificateIssuerPrivateKeyTypes,
    *,
    subject: str = "mdm.example.edu",
    issuer: str | None = None,
    serial: int | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    days: float = 365,
    ca: bool = False,
) -> x509.Certificate:
    """Return a certificate for public_key signed by signing_key (self-issued unless issuer)."""
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signing_key, algorithm)


def self_signed_rsa(
    bits: int = 2048,
    *,
    subject: str = "mdm.example.edu",
    serial: int | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    days: float = 365,
) -> CertAndKey:
    """Return a self-signed RSA certificate."""
    key = rsa_key(bits)
    certificate = build_certificate(
        key.public_key(), key, subject=subject, serial=serial, not_before=not_before, days=days
    )
    return CertAndKey(certificate, key)


def ca_and_leaf() -> tuple[CertAndKey, CertAndKey]:
    """Return a CA certificate and an RSA leaf certificate it signed."""
    ca_key = rsa_key(2048, index=1)
    ca_cert = build_certificate(ca_key.public_key(), ca_key, subject="Example Test CA", ca=True)
    leaf_key = rsa_key(2048)
    leaf = build_certificate(leaf_key.public_key(), ca_key, issuer="Example Test CA")
    return CertAndKey(ca_cert, ca_key), CertAndKey(leaf, leaf_key)


def ca_signed_rsa() -> CertAndKey:
    """Return an RSA certificate signed by a test CA."""
    return ca_and_leaf()[1]


def expired_rsa() -> CertAndKey:
    """Return a self-signed RSA certificate that expired 30 days before NOW."""
    return self_signed_rsa(not_before=NOW - timedelta(days=395), days=365)


def nanodep_like_rsa() -> CertAndKey:
    """Return a self-signed RSA certificate like NanoDEP's: serial 1, valid for one day."""
    return self_signed_rsa(
        subject="deptokens", serial=1, not_before=NOW - timedelta(hours=1), days=1
    )


def rsa_1024() -> CertAndKey:
    """Return a self-signed certificate with a 1024-bit RSA key."""
    return self_signed_rsa(1024)


def ec_cert() -> CertAndKey:
    """Return a self-signed certificate with a P-256 EC key."""
    key = ec_key()
    return CertAndKey(build_certificate(key.public_key(), key), key)


def dsa_cert() -> CertAndKey:
    """Return a self-signed certificate with a DSA key."""
    key = dsa_key()
    return CertAndKey(build_certificate(key.public_key(), key), key)


def ed25519_cert() -> CertAndKey:
    """Return a self-signed certificate with an Ed25519 key."""
    key = ed25519_key()
    return CertAndKey(build_certificate(key.public_key(), key), key)


def cert_pem(certificate: x509.Certificate) -> bytes:
    """Return a certificate as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def cert_der(certificate: x509.Certificate) -> bytes:
    """Return a certificate as DER."""
    return certificate.public_bytes(serialization.Encoding.DER)


def private_key_pem(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    pkcs8: bool = True,
) -> bytes:
    """Return a private key (default the 2048-bit RSA key) as PEM, PKCS#8 or traditional."""
    key = key or rsa_key()
    layout = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, layout, serialization.NoEncryption())


def private_key_der(key: CertificateIssuerPrivateKeyTypes | None = None) -> bytes:
    """Return a private key (default the 2048-bit RSA key) as unencrypted PKCS#8 DER."""
    return (key or rsa_key()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def csr(key: rsa.RSAPrivateKey | None = None) -> x509.CertificateSigningRequest:
    """Return a certificate signing request for mdm.example.edu."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("mdm.example.edu"))
        .sign(key or rsa_key(), hashes.SHA256())
    )


def csr_pem() -> bytes:
    """Return a certificate signing request as PEM."""
    return csr().public_bytes(serialization.Encoding.PEM)


def csr_der() -> bytes:
    """Return a certificate signing request as DER."""
    return csr().public_bytes(serialization.Encoding.DER)
