"""Uploaded certificates are parsed, checked against Apple's rules, and never crash the parser."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import CertificateError
from core.tokens.certificates import (
    MAX_CERT_BYTES,
    MIN_RSA_BITS,
    LoadedCertificate,
    load_certificate,
    pem_blocks,
)
from tests import certs

FIXTURE = certs.APPLE_FIXTURE

NOT_CERT = "not a public key certificate; upload the certificate file"


def test_pem_is_loaded(now: datetime, rsa_cert: certs.CertAndKey) -> None:
    loaded = load_certificate(rsa_cert.pem, now=now)
    assert loaded.certificate == rsa_cert.certificate
    assert loaded.pem == rsa_cert.pem.decode()
    assert loaded.fingerprint_sha256 == hashlib.sha256(rsa_cert.der).hexdigest()
    assert loaded.subject == "CN=mdm.example.edu"
    assert loaded.not_after == rsa_cert.certificate.not_valid_after_utc
    assert loaded.not_after.tzinfo is not None
    assert loaded.key_bits == MIN_RSA_BITS == 2048
    assert loaded.warnings == ()


def test_der_is_loaded(now: datetime, rsa_cert: certs.CertAndKey) -> None:
    loaded = load_certificate(rsa_cert.der, now=now)
    assert loaded.certificate == rsa_cert.certificate
    assert loaded.pem.startswith("-----BEGIN CERTIFICATE-----\n")


def test_apples_fixture_certificate_is_loaded(now: datetime) -> None:
    loaded = load_certificate((FIXTURE / "public-key.crt").read_bytes(), now=now)
    assert "CN=apple-mdm-client-tests" in loaded.subject
    assert loaded.key_bits >= 2048


def test_bundle_uses_its_first_certificate(now: datetime) -> None:
    ca, leaf = certs.ca_and_leaf()
    loaded = load_certificate(leaf.pem + ca.pem, now=now)
    assert loaded.certificate == leaf.certificate
    assert loaded.pem == leaf.pem.decode()


def test_ca_signed_and_nanodep_like_certificates_are_normal(now: datetime) -> None:
    assert load_certificate(certs.ca_signed_rsa().pem, now=now).warnings == ()
    nanodep = load_certificate(certs.nanodep_like_rsa().der, now=now)
    assert nanodep.certificate.serial_number == 1
    assert nanodep.warnings == ()


def test_crlf_and_leading_text_are_tolerated(now: datetime, rsa_cert: certs.CertAndKey) -> None:
    crlf = rsa_cert.pem.replace(b"\n", b"\r\n")
    assert load_certificate(crlf, now=now).certificate == rsa_cert.certificate
    noisy = b"\xef\xbb\xbfBag Attributes\n  friendlyName: mdm\n\n  " + crlf + b"\n\n"
    assert load_certificate(noisy, now=now).certificate == rsa_cert.certificate


def test_expired_certificate_is_accepted_with_a_warning(now: datetime) -> None:
    expired = certs.expired_rsa()
    loaded = load_certificate(expired.pem, now=now)
    assert len(loaded.warnings) == 1
    day = f"{expired.certificate.not_valid_after_utc:%Y-%m-%d}"
    assert f"expired on {day}" in loaded.warnings[0]


def test_naive_now_is_taken_as_utc(rsa_cert: certs.CertAndKey) -> None:
    naive = datetime(2027, 11, 27, 14, 0)
    assert load_certificate(rsa_cert.pem, now=naive).warnings == ()
    assert load_certificate(rsa_cert.pem, now=datetime(2040, 1, 1, tzinfo=UTC)).warnings


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"  \r\n\t ", "empty"),
        (b"-" * (MAX_CERT_BYTES + 1), "at most 64 KiB"),
        (b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>", "looks like a web page"),
        (b"\n  <html lang='en'><head>", "sign-in page"),
        (b"\x00\x01\x02garbage", NOT_CERT),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", NOT_CERT),
        (b"hello, world", NOT_CERT),
    ],
)
def test_bad_bytes_are_refused(data: bytes, message: str, now: datetime) -> None:
    with pytest.raises(CertificateError, match=message) as caught:
        load_certificate(data, now=now)
    assert caught.value.field == "certificate"


PRIVATE_KEY_MESSAGE = (
    "This is a private key — upload the public key certificate instead; "
    "keep the private key on the MDM server."
)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: certs.private_key_pem(), id="pkcs8-pem"),
        pytest.param(lambda: certs.private_key_pem(pkcs8=False), id="pkcs1-pem"),
        pytest.param(lambda: certs.private_key_pem(certs.ec_key()), id="ec-pem"),
        pytest.param(lambda: certs.private_key_der(), id="pkcs8-der"),
        pytest.param(lambda: (FIXTURE / "private-key.pem").read_bytes(), id="apple-fixture-key"),
    ],
)
def test_private_keys_are_refused(data: object, now: datetime) -> None:
    assert callable(data)
    with pytest.raises(CertificateError) as caught:
        load_certificate(data(), now=now)
    assert caught.value.message == PRIVATE_KEY_MESSAGE


def test_a_certificate_with_its_private_key_is_taken_with_a_warning(now: datetime) -> None:
    cert = certs.self_signed_rsa()
    for data in (cert.pem + certs.private_key_pem(), certs.private_key_pem() + cert.pem):
        loaded = load_certificate(data, now=now)
        assert loaded.pem.encode() == cert.pem
        assert loaded.warnings[0].startswith("This file also holds a private key")
        assert "consider it exposed" in loaded.warnings[0]


@pytest.mark.parametrize("data", [certs.csr_pem, certs.csr_der])
def test_signing_requests_are_refused(data: object, now: datetime) -> None:
    assert callable(data)
    with pytest.raises(CertificateError, match="certificate signing request, not a certificate"):
        load_certificate(data(), now=now)


def test_bare_public_key_is_refused(now: datetime) -> None:
    public = (
        certs.rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CertificateError, match="bare public key"):
        load_certificate(public, now=now)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (certs.ec_cert, "an EC key"),
        (certs.dsa_cert, "a DSA key"),
        (certs.ed25519_cert, "an Ed25519 key"),
    ],
)
def test_non_rsa_keys_are_refused(make: object, kind: str, now: datetime) -> None:
    assert callable(make)
    with pytest.raises(CertificateError) as caught:
        load_certificate(make().pem, now=now)
    assert caught.value.message == (
        f"Apple can't send tokens to this certificate: its key is {kind}; make a new certificate "
        "with the usual (RSA) key."
    )


def test_short_rsa_key_is_refused(now: datetime) -> None:
    with pytest.raises(CertificateError) as caught:
        load_certificate(certs.rsa_1024().der, now=now)
    assert caught.value.message == (
        "This certificate's key is too short (1024 bits); Apple requires 2048 bits or more: make "
        "a new certificate on the MDM server."
    )


def test_damaged_pem_body_is_refused(now: datetime, rsa_cert: certs.CertAndKey) -> None:
    lines = rsa_cert.pem.splitlines(keepends=True)
    damaged = b"".join([*lines[:3], b"!!!!\n", *lines[3:]])
    with pytest.raises(CertificateError, match="damaged"):
        load_certificate(damaged, now=now)


def _check(data: bytes) -> None:
    """Assert load_certificate either loads data or refuses it with a CertificateError."""
    try:
        result = load_certificate(data, now=certs.NOW)
    except CertificateError as exc:
        assert exc.message
    else:
        assert isinstance(result, LoadedCertificate)
        assert isinstance(result.certificate, x509.Certificate)


FUZZ = settings(max_examples=200, deadline=None)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check(data)


SAMPLE = certs.self_signed_rsa()


@FUZZ
@given(st.data())
def test_fuzz_truncated_and_flipped_certificates(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from([SAMPLE.der, SAMPLE.pem]))
    cut = data.draw(st.integers(min_value=0, max_value=len(source)))
    mutated = bytearray(source[:cut] if data.draw(st.booleans()) else source)
    for _ in range(data.draw(st.integers(min_value=0, max_value=8))):
        if mutated:
            index = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
            mutated[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    _check(bytes(mutated))


@FUZZ
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_fuzz_pem_framing(prefix: bytes, body: bytes) -> None:
    _check(prefix + b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n")


def test_unknown_key_algorithm_is_refused(now: datetime, rsa_cert: certs.CertAndKey) -> None:
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    assert rsa_cert.der.count(rsa_encryption) == 1
    unknown = rsa_cert.der.replace(rsa_encryption, bytes.fromhex("06092a864886f70d01017f"))
    with pytest.raises(CertificateError, match="its key is of an unknown type"):
        load_certificate(unknown, now=now)


def test_pem_blocks_are_found_in_one_pass_over_the_markers() -> None:
    data = (
        b"text -----BEGIN A----- left open\n"
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        b"-----END B----- stray\n-----BEGIN C-----\nxx\n-----END D-----\n"
        b"-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----"
    )

    assert pem_blocks(data) == [(b"CERTIFICATE", b"\nAAAA\n"), (b"PUBLIC KEY", b"\nBBBB\n")]


@pytest.mark.parametrize(
    "hostile",
    [
        b"-----BEGIN A-----" * 3855,
        b"-----BEGIN CERTIFICATE-----\n" * 2340,
        b"-----BEGIN " + b"A" * 65000,
        b"-----END A-----" * 4369,
    ],
    ids=["BEGIN A", "BEGIN CERTIFICATE", "long label", "END A"],
)
def test_64_kib_of_unterminated_markers_is_refused(hostile: bytes, now: datetime) -> None:
    # bench/issuance.py times this case (it took seconds when the scan was quadratic).
    assert len(hostile) <= MAX_CERT_BYTES
    assert pem_blocks(hostile) == []
    with pytest.raises(CertificateError, match=r"not a public key certificate"):
        load_certificate(hostile, now=now)


def test_a_long_lived_certificate_about_to_expire_gets_a_warning(now: datetime) -> None:
    ending = certs.self_signed_rsa(not_before=now - timedelta(days=350), days=365)
    [warning] = load_certificate(ending.pem, now=now).warnings
    end = (now + timedelta(days=15)).date()
    assert warning == (
        f"This certificate expires on {end:%Y-%m-%d}, within 30 days; get a new one from your "
        "MDM server soon."
    )
    # A certificate issued short-lived on purpose (NanoDEP: one day) is normal.
    assert load_certificate(certs.nanodep_like_rsa().pem, now=now).warnings == ()
    fresh = certs.self_signed_rsa(not_before=now - timedelta(days=1), days=365)
    assert load_certificate(fresh.pem, now=now).warnings == ()
