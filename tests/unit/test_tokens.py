"""Token files match Apple's layout byte for byte and decrypt with OpenSSL."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.tokens.token_file import (
    TokenCredentials,
    add_one_year,
    build_token_file,
    envelope,
    generate_credentials,
    parse_content,
    render_content,
    token_filename,
)
from tests import certs

FIXTURE = certs.APPLE_FIXTURE
APPLE_TOKEN = FIXTURE / "server-token_smime.p7m"
APPLE_KEY = FIXTURE / "private-key.pem"
ISSUED = datetime(2027, 11, 27, 14, 3, 34, 567891, tzinfo=UTC)

SHAPES = {
    "consumer_key": re.compile(r"CK_[0-9a-f]{96}"),
    "consumer_secret": re.compile(r"CS_[0-9a-f]{40}"),
    "access_token": re.compile(r"AT_O[0-9]{10}O[0-9a-f]{40}O(?P<ms>[0-9]{13})"),
    "access_secret": re.compile(r"AS_[0-9a-f]{40}"),
    "access_token_expiry": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
}
CONTENT_HEADER = (
    b"Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
)


def decrypt(token: bytes, key_pem: bytes, tmp_path: Path) -> bytes:
    """Return what `openssl smime -decrypt` makes of a token file."""
    token_file, key_file = tmp_path / "token_smime.p7m", tmp_path / "key.pem"
    token_file.write_bytes(token)
    key_file.write_bytes(key_pem)
    return subprocess.run(
        ["openssl", "smime", "-decrypt", "-in", str(token_file), "-inkey", str(key_file)],
        check=True,
        capture_output=True,
    ).stdout


@pytest.fixture(scope="module")
def apple_content() -> bytes:
    """Return the decrypted content of Apple's real token."""
    return subprocess.run(
        ["openssl", "smime", "-decrypt", "-in", str(APPLE_TOKEN), "-inkey", str(APPLE_KEY)],
        check=True,
        capture_output=True,
    ).stdout


def header_block(token: bytes) -> bytes:
    """Return the MIME header block of a token file, up to and including the blank line."""
    return token[: token.index(b"\n\n") + 2]


def test_shapes_match_apples_real_token(apple_content: bytes) -> None:
    fields = parse_content(apple_content)
    assert list(fields) == list(SHAPES)
    for name, shape in SHAPES.items():
        assert shape.fullmatch(fields[name]), name
    match = SHAPES["access_token"].fullmatch(fields["access_token"])
    assert match is not None
    issued = datetime.fromtimestamp(int(match["ms"]) / 1000, tz=UTC)
    assert fields["access_token_expiry"] == f"{add_one_year(issued):%Y-%m-%dT%H:%M:%SZ}"


def test_issued_token_decrypts_to_apples_layout(
    apple_content: bytes, rsa_cert: certs.CertAndKey, tmp_path: Path
) -> None:
    creds = generate_credentials(ISSUED)
    token = build_token_file(creds, rsa_cert.certificate)
    content = decrypt(token, rsa_cert.key_pem, tmp_path)
    assert content == render_content(creds)
    assert content.startswith(CONTENT_HEADER) and apple_content.startswith(CONTENT_HEADER)
    ours, apples = content[len(CONTENT_HEADER) :], apple_content[len(CONTENT_HEADER) :]
    assert b"\r" not in ours and b"\r" not in apples
    assert ours.count(b"\n") == apples.count(b"\n") == 3
    assert ours.split(b"\n")[0::2] == apples.split(b"\n")[0::2]
    fields = parse_content(content)
    assert list(fields) == list(parse_content(apple_content))
    for name, shape in SHAPES.items():
        assert shape.fullmatch(fields[name]), name
    assert fields["consumer_key"] == creds.consumer_key
    assert fields["access_token"].endswith(f"O{1827324214567}")
    assert fields["access_token_expiry"] == "2028-11-27T14:03:34Z"
    assert b'{"consumer_key":"CK_' in content and b'", "' not in content


def test_envelope_matches_apples_outer_layout(rsa_cert: certs.CertAndKey) -> None:
    token = build_token_file(generate_credentials(ISSUED), rsa_cert.certificate)
    apple = APPLE_TOKEN.read_bytes()
    assert header_block(token) == header_block(apple)
    assert header_block(token).splitlines() == [
        b'Content-Type: application/pkcs7-mime; name="smime.p7m"; smime-type=enveloped-data',
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: attachment; filename="smime.p7m"',
        b"Content-Description: S/MIME Encrypted Message",
        b"",
    ]
    body = token[len(header_block(token)) :].split(b"\n")
    assert body[-1] == b"" and body[-2]
    assert all(len(line) == 76 for line in body[:-2])
    assert 0 < len(body[-2]) <= 76
    assert token.endswith(b"\n") and apple.endswith(b"\n") and b"\r" not in token


def test_envelope_uses_aes128_and_rsa_pkcs1_key_transport(tmp_path: Path) -> None:
    nanodep = certs.nanodep_like_rsa()
    token_file = tmp_path / "t_smime.p7m"
    token_file.write_bytes(envelope(b"hello\n", nanodep.certificate))
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-inform", "SMIME", "-in", str(token_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "contentType: pkcs7-envelopedData" in printed
    assert "algorithm: aes-128-cbc (2.16.840.1.101.3.4.1.2)" in printed
    assert "algorithm: rsaEncryption (1.2.840.113549.1.1.1)" in printed
    assert "rsaesOaep" not in printed
    assert "issuer: CN=deptokens" in printed
    assert "serialNumber: 1\n" in printed


def test_envelope_keeps_lf_bytes(rsa_cert: certs.CertAndKey, tmp_path: Path) -> None:
    content = b"a\nb\r\nc\n"
    assert decrypt(envelope(content, rsa_cert.certificate), rsa_cert.key_pem, tmp_path) == content


def test_nanodep_like_certificate_receives_a_token(tmp_path: Path) -> None:
    nanodep = certs.nanodep_like_rsa()
    assert nanodep.certificate.serial_number == 1
    creds = generate_credentials(ISSUED)
    content = decrypt(build_token_file(creds, nanodep.certificate), nanodep.key_pem, tmp_path)
    assert parse_content(content)["access_secret"] == creds.access_secret


def test_ca_signed_certificate_receives_a_token(tmp_path: Path) -> None:
    leaf = certs.ca_signed_rsa()
    creds = generate_credentials(ISSUED)
    content = decrypt(build_token_file(creds, leaf.certificate), leaf.key_pem, tmp_path)
    assert content == render_content(creds)


@pytest.mark.parametrize(
    ("issued", "expires"),
    [
        (datetime(2028, 2, 29, 12, 0, tzinfo=UTC), datetime(2029, 2, 28, 12, 0, tzinfo=UTC)),
        (
            datetime(2027, 2, 28, 23, 59, 59, tzinfo=UTC),
            datetime(2028, 2, 28, 23, 59, 59, tzinfo=UTC),
        ),
        (datetime(2027, 3, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
        (datetime(2027, 12, 31, 23, 0, tzinfo=UTC), datetime(2028, 12, 31, 23, 0, tzinfo=UTC)),
    ],
)
def test_add_one_year(issued: datetime, expires: datetime) -> None:
    assert add_one_year(issued) == expires


def test_leap_day_token_expires_on_28_february() -> None:
    creds = generate_credentials(datetime(2028, 2, 29, 9, 30, 15, 999999, tzinfo=UTC))
    assert creds.issued_at == datetime(2028, 2, 29, 9, 30, 15, 999000, tzinfo=UTC)
    assert creds.expires_at == datetime(2029, 2, 28, 9, 30, 15, tzinfo=UTC)
    assert parse_content(render_content(creds))["access_token_expiry"] == "2029-02-28T09:30:15Z"


def test_times_are_kept_in_utc_to_the_millisecond() -> None:
    paris = timezone(timedelta(hours=1))
    creds = generate_credentials(datetime(2027, 11, 27, 15, 3, 34, 567891, tzinfo=paris))
    assert creds.issued_at == datetime(2027, 11, 27, 14, 3, 34, 567000, tzinfo=UTC)
    assert creds.issued_at.utcoffset() == timedelta(0)
    assert creds.access_token.endswith("O1827324214567")
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_credentials(datetime(2027, 11, 27))


def test_filename_format() -> None:
    assert (
        token_filename("Lincoln High MDM", ISSUED)
        == "Lincoln_High_MDM_Token_2027-11-27T14-03-34Z_smime.p7m"
    )
    paris = timezone(timedelta(hours=1))
    assert token_filename("../x", datetime(2028, 1, 1, 0, 30, tzinfo=paris)) == (
        "x_Token_2027-12-31T23-30-00Z_smime.p7m"
    )


def test_repr_hides_secrets() -> None:
    creds = generate_credentials(ISSUED)
    text = repr(creds) + str(creds)
    for secret in (
        creds.consumer_key,
        creds.consumer_secret,
        creds.access_token,
        creds.access_secret,
    ):
        assert secret not in text
        assert secret[3:13] not in text
    assert "2027" in text and isinstance(creds, TokenCredentials)


def test_tokens_are_unique_per_call() -> None:
    batch = [generate_credentials(ISSUED) for _ in range(50)]
    for name in ("consumer_key", "consumer_secret", "access_token", "access_secret"):
        assert len({getattr(creds, name) for creds in batch}) == 50


def test_each_file_is_encrypted_afresh(rsa_cert: certs.CertAndKey) -> None:
    creds = generate_credentials(ISSUED)
    assert build_token_file(creds, rsa_cert.certificate) != build_token_file(
        creds, rsa_cert.certificate
    )


@pytest.mark.parametrize(
    "content",
    [
        b"",
        CONTENT_HEADER + b"-----BEGIN MESSAGE-----\n[]\n-----END MESSAGE-----\n",
        CONTENT_HEADER + b'-----BEGIN MESSAGE-----\n{"a":"b"}\n-----END MESSAGE-----\n',
        b"-----END MESSAGE-----\n-----BEGIN MESSAGE-----\n",
    ],
)
def test_parse_content_refuses_malformed_content(content: bytes) -> None:
    with pytest.raises(ValueError):
        parse_content(content)
