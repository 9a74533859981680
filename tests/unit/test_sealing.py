"""Sealed private_metadata: what comes back is what was sent, or it is refused."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.sealing import seal, unseal
from core.vault import Vault

KEY = Vault(b"0" * 43 + b"=").derive_key("slack private_metadata")


def test_a_sealed_text_comes_back_unchanged() -> None:
    text = '{"server_id":7,"expects":12,"channel":"C0ALERTS"}'
    assert unseal(KEY, seal(KEY, text)) == text


@pytest.mark.parametrize(
    "sealed",
    [
        '{"server_id":7}',
        seal(KEY, '{"server_id":7}').replace("7", "8"),
        seal(b"another key", '{"server_id":7}'),
        "",
        ".",
    ],
)
def test_anything_else_is_refused(sealed: str) -> None:
    with pytest.raises(InvalidInput, match="could not be verified"):
        unseal(KEY, sealed)


def test_derived_keys_differ_by_purpose_and_vault() -> None:
    other = Vault(b"1" * 43 + b"=")
    assert KEY != Vault(b"0" * 43 + b"=").derive_key("something else")
    assert KEY != other.derive_key("slack private_metadata")
    assert len(KEY) == 32
