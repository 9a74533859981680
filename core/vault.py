"""Encryption at rest of token secrets (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from core.errors import ConfigError

KEY_FILE_NAME = "secret.key"


class Vault:
    """Encrypts and decrypts small secrets with one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def __repr__(self) -> str:
        return "Vault(<key hidden>)"

    def encrypt(self, plaintext: str) -> str:
        """Encrypt text to an opaque ASCII token."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """Decrypt what `encrypt` produced; a wrong key is a configuration error."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise ConfigError(
                "Stored token secrets cannot be decrypted: MDMBOT_SECRET_KEY is not the key "
                "they were encrypted with."
            ) from exc

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. signing cursors), derived from the vault's key."""
        return hmac.new(self._key, b"mdmbot-derive\x00" + purpose.encode(), hashlib.sha256).digest()


def key_from_setting(value: str) -> bytes:
    """A Fernet key from MDMBOT_SECRET_KEY: a Fernet key as is, or any passphrase of 32+ chars."""
    raw = value.strip().encode("utf-8")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    if len(raw) < 32:
        raise ConfigError("MDMBOT_SECRET_KEY must be a Fernet key or at least 32 characters.")
    return base64.urlsafe_b64encode(hashlib.sha256(b"mdmbot-vault\x00" + raw).digest())


def load_or_create_key_file(data_dir: Path) -> bytes:
    """Read the generated key from the data directory, creating it (mode 0600) once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


def open_vault(secret_key: str | None, data_dir: Path) -> Vault:
    """The vault configured by MDMBOT_SECRET_KEY or the key file in the data directory."""
    if secret_key:
        return Vault(key_from_setting(secret_key))
    return Vault(load_or_create_key_file(data_dir))
