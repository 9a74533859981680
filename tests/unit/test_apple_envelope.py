"""Reading Apple's server token files without the private key: recipient, layout, file name."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography import x509

from core.apple.envelope import is_for, named_issue_time, read_token_file, recipients_of
from core.errors import InvalidInput
from core.tokens.token_file import envelope, generate_credentials, render_content
from tests import certs

FIXTURE = certs.APPLE_FIXTURE
ISSUED = datetime(2026, 12, 7, 2, 30, 5, tzinfo=UTC)


def _apple() -> tuple[bytes, x509.Certificate]:
    token = (FIXTURE / "server-token_smime.p7m").read_bytes()
    cert = x509.load_pem_x509_certificate((FIXTURE / "public-key.crt").read_bytes())
    return token, cert


def _issued_for(cert: x509.Certificate) -> bytes:
    return envelope(render_content(generate_credentials(ISSUED)), cert)


def test_apples_own_token_names_its_certificate_by_issuer_and_serial() -> None:
    token, cert = _apple()
    read = read_token_file(token, "server-token_smime.p7m")
    assert [r.serial for r in read.recipients] == [cert.serial_number]
    assert is_for(read, cert)
    assert not is_for(read, certs.self_signed_rsa().certificate)
    assert read.named_issue is None and read.named_expiry is None


def test_a_token_for_another_certificate_does_not_match() -> None:
    mine, other = certs.self_signed_rsa(), certs.ca_signed_rsa()
    read = read_token_file(_issued_for(mine.certificate), "x_Token_2026-12-07T02-30-05Z_smime.p7m")
    assert is_for(read, mine.certificate)
    assert not is_for(read, other.certificate)


def test_same_issuer_and_serial_cannot_be_told_apart_without_the_key() -> None:
    # NanoDEP's certificates are self-issued with serial 1: two key pairs for one DEP name
    # share issuer and serial, so only the MDM server's install answer can tell them apart.
    first = certs.nanodep_like_rsa().certificate
    key = certs.rsa_key(2048, 7)
    second = certs.build_certificate(key.public_key(), key, subject="deptokens", serial=1)
    assert is_for(read_token_file(_issued_for(first), "t.p7m"), second)


@pytest.mark.parametrize("shape", ["mime", "der", "pem", "crlf"])
def test_the_file_is_read_in_each_shape_a_person_may_have(shape: str) -> None:
    cert = certs.self_signed_rsa().certificate
    mime = _issued_for(cert)
    der = base64.b64decode(mime.partition(b"\n\n")[2])
    data = {
        "mime": mime,
        "der": der,
        "pem": b"-----BEGIN PKCS7-----\n" + base64.encodebytes(der) + b"-----END PKCS7-----\n",
        "crlf": mime.replace(b"\n", b"\r\n"),
    }[shape]
    read = read_token_file(data, "token.p7m")
    assert read.der == der and is_for(read, cert)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file\n",
        certs.self_signed_rsa().pem,  # a certificate, not a token
        certs.self_signed_rsa().der,
        b"Content-Type: application/pkcs7-mime\n\n!!!not base64!!!\n",
        b"\x30\x82\xff\xff\x06",  # a truncated DER
        b"\x30\x80\x00\x00",  # indefinite length (BER, not DER)
        b"A" * (65 * 1024),
    ],
)
def test_anything_else_is_one_clear_line(data: bytes) -> None:
    with pytest.raises(InvalidInput) as refused:
        read_token_file(data, "/downloads/notes.p7m")
    assert "\n" not in refused.value.message
    assert "“notes.p7m”" in refused.value.message


def test_a_signed_message_is_not_an_envelope() -> None:
    token, _ = _apple()
    der = bytearray(base64.b64decode(token.partition(b"\n\n")[2]))
    der[der.index(bytes.fromhex("2a864886f70d010703")) + 8] = 0x02  # pkcs7-signedData
    with pytest.raises(ValueError):
        recipients_of(bytes(der))
    with pytest.raises(InvalidInput, match="is not a server token"):
        read_token_file(bytes(der), "signed.p7m")


def test_expiry_from_apples_file_name() -> None:
    name = "School One_Token_2026-02-29T23-59-58Z_smime.p7m"
    assert named_issue_time(name) is None, "no 29 February in 2026"
    name = "School_One_Token_2028-02-29T23-59-58Z_smime.p7m"
    read = read_token_file(_issued_for(certs.self_signed_rsa().certificate), name)
    assert read.named_issue == datetime(2028, 2, 29, 23, 59, 58, tzinfo=UTC)
    assert read.named_expiry == datetime(2029, 2, 28, 23, 59, 58, tzinfo=UTC)
    assert named_issue_time("X_Token_2026-12-07T02-30-05Z_smime (1).p7m") == ISSUED
    assert named_issue_time("smime.p7m") is None
