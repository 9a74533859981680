"""Encryption at rest of token secrets (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, select

from core.errors import ConfigError
from core.files import private_directory
from core.models import KeyCheck, Token

KEY_FILE_NAME = "secret.key"
KEY_CHECK_TEXT = "mdmbot key check value"


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

    def can_decrypt(self, ciphertext: str) -> bool:
        """Whether this key opens `ciphertext`."""
        try:
            self._fernet.decrypt(ciphertext.encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True

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


def _read_key_file(path: Path) -> bytes | None:
    """The key in the key file, None when there is no file; a damaged file names itself."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the secret key file {path}: {exc.strerror or exc}."
        ) from exc
    try:
        Fernet(key)
    except ValueError as exc:
        state = "empty" if not key else "damaged"
        raise ConfigError(
            f"The secret key file {path} is {state}: it must hold one Fernet key. Restore it "
            "from your backup (or set MDMBOT_SECRET_KEY)."
        ) from exc
    return key


def _create_key_file(path: Path) -> bytes:
    """Generate the key into a new 0600 file, complete when it appears (another may win)."""
    key = Fernet.generate_key()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        os.link(tmp, path)
    except FileExistsError:
        return _read_key_file(path) or key
    finally:
        os.unlink(tmp)
    return key


def _holds_secrets(session: Session) -> bool:
    """Whether the database holds anything encrypted with a key."""
    return (
        session.get(KeyCheck, 1) is not None
        or session.exec(select(Token.id).limit(1)).first() is not None
    )


def open_vault(session: Session, secret_key: str | None, data_dir: Path, now: datetime) -> Vault:
    """The configured key's vault, checked against the database; a lost key is never replaced."""
    if secret_key:
        vault, source = Vault(key_from_setting(secret_key)), "MDMBOT_SECRET_KEY"
    else:
        path = private_directory(data_dir, "MDMBOT_DATA_DIR") / KEY_FILE_NAME
        key = _read_key_file(path)
        if key is None:
            if _holds_secrets(session):
                raise ConfigError(
                    f"The secret key file {path} is missing, but the database holds token "
                    "secrets encrypted with it. Restore the file from your backup (or set "
                    "MDMBOT_SECRET_KEY); mdmbot will not start with a new key."
                )
            key = _create_key_file(path)
        vault, source = Vault(key), f"The key in {path}"
    _check_key(session, vault, source, now)
    return vault


def _check_key(session: Session, vault: Vault, source: str, now: datetime) -> None:
    """Compare the key with the stored check value, or store one (a token proves the old key)."""
    wrong = ConfigError(
        f"{source} is not the key this database's token secrets were encrypted with; restore "
        "the right key from your backup (or check MDMBOT_DATABASE_URL)."
    )
    check = session.get(KeyCheck, 1)
    if check is None:
        sample = session.exec(select(Token.secrets).limit(1)).first()
        if sample is not None and not vault.can_decrypt(sample):
            raise wrong
        try:
            with session.begin_nested():
                session.add(KeyCheck(value=vault.encrypt(KEY_CHECK_TEXT), created_at=now))
        except sa.exc.IntegrityError:  # another replica stored it first
            check = session.get(KeyCheck, 1)
    if check is not None and not vault.can_decrypt(check.value):
        raise wrong
