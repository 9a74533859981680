"""Encryption at rest of token secrets (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlmodel import Session, select

from core.errors import ConfigError
from core.files import private_directory
from core.models import KeyCheck, Token

KEY_FILE_NAME = "secret.key"
OLD_PREFIX = KEY_FILE_NAME + ".old-"
LOCK_NAME = KEY_FILE_NAME + ".lock"


def old_key_path(data_dir: Path, key_id: str) -> Path:
    """Where a rotated-out key is kept (`secret.key.old-key-…`)."""
    return data_dir / f"{OLD_PREFIX}{key_id}"


def old_key_paths(data_dir: Path) -> list[Path]:
    """The kept old keys, newest first."""
    try:
        found = [p for p in data_dir.glob(OLD_PREFIX + "*") if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class KeyFileLock:
    """A hold on the key file: shared while a process uses it, exclusive while rotating."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:  # a read-only data directory (a mounted key): no rotation writes there
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def share(self) -> None:
        """Hold the key file as one of its users; refused while a rotation holds it."""
        if not self._take(fcntl.LOCK_SH):
            raise ConfigError(
                f"The secret key in {self.path.parent / KEY_FILE_NAME} is being rotated "
                "(`mdmbot key rotate`); run this again when it is done."
            )

    def exclusive(self) -> bool:
        """Hold the key file alone (False: another process uses it)."""
        return self._take(fcntl.LOCK_EX)

    def _take(self, kind: int) -> bool:
        if self._fd < 0:
            return True
        try:
            fcntl.flock(self._fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks: nothing to hold
            return True
        return True

log = logging.getLogger("mdmbot.vault")

KEY_CHECK_TEXT = "mdmbot key check value"
KEY_CHECK_ID = 1
SEED_ID = 2  # a KeyCheck row holding the key derived keys come from, once a key was rotated
SETTING = "MDMBOT_SECRET_KEY"


class Vault:
    """Encrypts with its first key; decrypts with any of its keys (during a key rotation)."""

    def __init__(self, key: bytes, *older: bytes, source: str = SETTING) -> None:
        self._keys = (key, *older)
        self._fernet = MultiFernet([Fernet(k) for k in self._keys])
        self._key = key
        self.source = source  # where the key came from, as errors name it
        self.hold: KeyFileLock | None = None  # the key file, held while this process uses it

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
                f"{self.source} does not open the stored token secrets: it is not the key "
                "they were encrypted with."
            ) from exc

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. signing cursors), kept across key rotations."""
        return hmac.new(self._key, b"mdmbot-derive\x00" + purpose.encode(), hashlib.sha256).digest()

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The keys, the one that encrypts first."""
        return self._keys

    def rotate(self, ciphertext: str) -> str:
        """`ciphertext` encrypted again with the first key."""
        return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")

    def derive_from(self, seed: bytes) -> None:
        """Derive keys from `seed` (the key secrets were first encrypted with)."""
        self._key = seed

    def sealed_seed(self) -> str:
        """The key derived keys come from, encrypted with the first key (stored on rotation)."""
        return self.encrypt(self._key.decode("ascii"))

    def key_id(self) -> str:
        """A fingerprint naming the encrypting key without revealing it."""
        return fingerprint(self._keys[0])


def fingerprint(key: bytes) -> str:
    """A short, non-secret name of a Fernet key (`key-` and 16 hex digits)."""
    return "key-" + hmac.new(key, b"mdmbot key id", hashlib.sha256).hexdigest()[:16]


def _one_key(value: str) -> bytes:
    """A Fernet key from one setting value: a Fernet key as is, or a passphrase of 32+ chars."""
    raw = value.strip().encode("utf-8")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    if len(raw) < 32:
        raise ConfigError("MDMBOT_SECRET_KEY must be a Fernet key or at least 32 characters.")
    return base64.urlsafe_b64encode(hashlib.sha256(b"mdmbot-vault\x00" + raw).digest())


def keys_from_setting(value: str) -> list[bytes]:
    """The keys of MDMBOT_SECRET_KEY: "new,old" during a rotation, else one key or passphrase."""
    parts = [p for p in value.split(",") if p.strip()]
    try:
        if len(parts) > 1:
            return [_one_key(p) for p in parts]
    except ConfigError:
        pass  # a passphrase with a comma in it
    return [_one_key(value)]


def key_from_setting(value: str) -> bytes:
    """The encrypting key of MDMBOT_SECRET_KEY (its first key)."""
    return keys_from_setting(value)[0]


def read_key_file(path: Path) -> list[bytes] | None:
    """The keys in the key file (one a line, the encrypting one first), None without a file."""
    try:
        lines = path.read_bytes().split()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the secret key file {path}: {exc.strerror or exc}."
        ) from exc
    try:
        for key in lines or [b""]:
            Fernet(key)
    except ValueError as exc:
        state = "empty" if not lines else "damaged"
        raise ConfigError(
            f"The secret key file {path} is {state}: it must hold one Fernet key. Restore it "
            "from your backup (or set MDMBOT_SECRET_KEY)."
        ) from exc
    return lines


def _read_key_file(path: Path) -> bytes | None:
    """The key in the key file, None when there is no file; a damaged file names itself."""
    keys = read_key_file(path)
    return keys[0] if keys else None


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically with `keys` (mode 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(k + b"\n" for k in keys))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def old_keys(data_dir: Path) -> list[bytes]:
    """The keys kept by key rotations (`secret.key.old-…`), newest first; they only decrypt."""
    return [key for path in old_key_paths(data_dir) for key in read_key_file(path) or []]


def configured_keys(secret_key: str | None, data_dir: Path) -> tuple[list[bytes], str] | None:
    """The configured keys (then kept old ones) and where they come from; None: no key."""
    if secret_key:
        return keys_from_setting(secret_key), SETTING
    path = data_dir / KEY_FILE_NAME
    keys = read_key_file(path)
    return ([*keys, *old_keys(data_dir)], f"The key in {path}") if keys else None


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
    log.warning(
        "Created a new secret key file %s: token secrets are encrypted with it; back it up "
        "(without it, neither this database's secrets nor its backups can be read).",
        path,
    )
    return key


def _holds_secrets(session: Session) -> bool:
    """Whether the database holds anything encrypted with a key."""
    return (
        session.get(KeyCheck, 1) is not None
        or session.exec(select(Token.id).limit(1)).first() is not None
    )


def open_vault(
    session: Session,
    secret_key: str | None,
    data_dir: Path,
    now: datetime,
    *,
    hold: KeyFileLock | None = None,
) -> Vault:
    """The configured key's vault, checked against the database; a lost key is never replaced."""
    if secret_key:
        vault = Vault(*keys_from_setting(secret_key))
    else:
        path = private_directory(data_dir, "MDMBOT_DATA_DIR") / KEY_FILE_NAME
        if hold is None:
            hold = KeyFileLock(data_dir)
            hold.share()
        keys = read_key_file(path)
        if keys is None:
            if _holds_secrets(session):
                raise ConfigError(
                    f"The secret key file {path} is missing, but the database holds token "
                    "secrets encrypted with it. Restore the file from your backup (or set "
                    "MDMBOT_SECRET_KEY); mdmbot will not start with a new key."
                )
            keys = [_create_key_file(path)]
        vault = Vault(*keys, *old_keys(data_dir), source=f"The key in {path}")
        vault.hold = hold
    _check_key(session, vault, vault.source, now)
    _use_seed(session, vault)
    return vault


def wrong_key(source: str) -> ConfigError:
    """The one-line refusal of a key that does not open this database's secrets."""
    return ConfigError(
        f"{source} is not the key this database's token secrets were encrypted with; restore "
        "the right key from your backup (or check MDMBOT_DATABASE_URL)."
    )


def _check_key(session: Session, vault: Vault, source: str, now: datetime) -> None:
    """Compare the key with the stored check value, or store one (a token proves the old key)."""
    check = session.get(KeyCheck, KEY_CHECK_ID)
    if check is None:
        sample = session.exec(select(Token.secrets).limit(1)).first()
        if sample is not None and not vault.can_decrypt(sample):
            raise wrong_key(source)
        try:
            with session.begin_nested():
                session.add(KeyCheck(value=vault.encrypt(KEY_CHECK_TEXT), created_at=now))
        except sa.exc.IntegrityError:  # another replica stored it first
            check = session.get(KeyCheck, KEY_CHECK_ID)
    if check is not None and not vault.can_decrypt(check.value):
        raise wrong_key(source)


def _use_seed(session: Session, vault: Vault) -> None:
    """Derive keys from the key secrets were first encrypted with, so rotation keeps them."""
    seed = session.get(KeyCheck, SEED_ID)
    if seed is not None:
        vault.derive_from(vault.decrypt(seed.value).encode("ascii"))
        return
    check = session.get(KeyCheck, KEY_CHECK_ID)
    for key in vault.keys:
        if check is not None and Vault(key).can_decrypt(check.value):
            vault.derive_from(key)
            return
