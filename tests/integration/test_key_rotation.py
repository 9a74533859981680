"""`key rotate`: secrets re-encrypted with the new key, the old key alone refused after."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from core import db, lease
from core.backup.oldkeys import forget_old_key
from core.backup.restore import restore_backup
from core.backup.rotate import rotate_env_key, rotate_key_file
from core.backup.schedule import backup_path
from core.backup.snapshot import take_backup
from core.errors import ConfigError, InvalidInput
from core.models import AuditEvent, Token
from core.roles import Actor
from core.vault import (
    KEY_FILE_NAME,
    Vault,
    configured_keys,
    keys_from_setting,
    open_vault,
    read_key_file,
)
from tests.conftest import NOW
from tests.integration.backup_support import KEY, context, seed

OPERATOR = Actor("operator", operator=True)
WRONG = "MDMBOT_SECRET_KEY is not the key this database's token secrets were encrypted with"


def _secrets(url: str, tmp: Path, key: str | None) -> list[str]:
    ctx = context(url, tmp, key)
    vault = ctx.vault
    with ctx.unit_of_work() as session:
        found = [vault.decrypt(t.secrets) for t in session.exec(select(Token))]
    ctx.engine.dispose()
    return found


def test_rotation_re_encrypts_every_secret_and_the_old_key_is_then_refused(
    database_url: str, tmp_path: Path
) -> None:
    ctx = context(database_url, tmp_path)
    seed(ctx)
    before = _secrets(database_url, tmp_path, KEY)
    derived = ctx.vault.derive_key("dep cursors")
    new = Fernet.generate_key().decode()
    vault, changed = rotate_env_key(ctx.engine, f"{new},{KEY}", tmp_path, OPERATOR, NOW)
    assert changed == 4, "two tokens, the key check value and the derivation seed"
    assert vault.key_id() == Vault(new.encode()).key_id() != Vault(*keys_from_setting(KEY)).key_id()
    with ctx.unit_of_work() as session:
        stored = [t.secrets for t in session.exec(select(Token))]
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "key.rotate")).one()
    assert all(Vault(new.encode()).can_decrypt(s) for s in stored)
    assert audit.subject == vault.key_id() and new not in audit.detail
    ctx.engine.dispose()

    assert _secrets(database_url, tmp_path, new) == before
    assert _secrets(database_url, tmp_path, f"{new},{KEY}") == before
    with pytest.raises(ConfigError, match=WRONG) as refused:
        _secrets(database_url, tmp_path, KEY)
    assert "\n" not in refused.value.message
    after = context(database_url, tmp_path, new)
    assert after.vault.derive_key("dep cursors") == derived, "cursors outlive the old key"
    after.engine.dispose()


def test_one_key_or_keys_that_do_not_open_the_secrets_are_refused(
    database_url: str, tmp_path: Path
) -> None:
    ctx = context(database_url, tmp_path)
    seed(ctx)
    with pytest.raises(ConfigError, match=r'MDMBOT_SECRET_KEY holds one key: set it to "NEW,OLD"'):
        rotate_env_key(ctx.engine, KEY, tmp_path, OPERATOR, NOW)
    strangers = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    with pytest.raises(ConfigError, match=WRONG):
        rotate_env_key(ctx.engine, strangers, tmp_path, OPERATOR, NOW)
    ctx.engine.dispose()
    assert len(_secrets(database_url, tmp_path, KEY)) == 2


def test_the_key_file_gets_a_new_key(tmp_path: Path) -> None:
    url = _file_keyed(tmp_path)
    before = _secrets(url, tmp_path, None)
    old = read_key_file(tmp_path / KEY_FILE_NAME)
    ctx = context(url, tmp_path, key=None)
    vault, changed = rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)
    ctx.engine.dispose()
    new = read_key_file(tmp_path / KEY_FILE_NAME)
    assert old and new and len(new) == 1 and new != old and changed == 4
    assert vault.key_id() == Vault(new[0]).key_id()
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert _secrets(url, tmp_path, None) == before
    with pytest.raises(ConfigError, match=WRONG):
        _secrets(url, tmp_path, old[0].decode())


def test_a_vault_given_two_keys_reads_both_and_writes_with_the_first(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed = Vault(old).encrypt("secret")
    both = Vault(*keys_from_setting(f"{new.decode()},{old.decode()}"))
    assert both.decrypt(sealed) == "secret"
    assert Vault(new).decrypt(both.rotate(sealed)) == "secret"
    assert not Vault(old).can_decrypt(both.encrypt("x"))
    phrase = "a passphrase, with a comma, that is long enough"
    assert len(keys_from_setting(phrase)) == 1, "a passphrase with commas stays one key"
    with pytest.raises(ConfigError, match="must be a Fernet key or at least 32"):
        keys_from_setting("short")


def test_open_vault_keeps_refusing_a_wrong_key_list(database_url: str, tmp_path: Path) -> None:
    ctx = context(database_url, tmp_path)
    seed(ctx)
    with ctx.unit_of_work() as session, pytest.raises(ConfigError, match=WRONG):
        open_vault(session, Fernet.generate_key().decode(), tmp_path, NOW)
    ctx.engine.dispose()


def _file_keyed(tmp_path: Path) -> str:
    """A seeded SQLite database whose key is in the key file; nothing left holding the file."""
    url = f"sqlite:///{tmp_path / 'mdmbot.db'}"
    db.upgrade(url)
    seeding = context(url, tmp_path, key=None)
    seed(seeding)
    seeding.engine.dispose()
    return url


def test_rotation_is_refused_while_a_process_serves_or_uses_the_key_file(tmp_path: Path) -> None:
    url = _file_keyed(tmp_path)
    old = read_key_file(tmp_path / KEY_FILE_NAME)
    ctx = context(url, tmp_path, key=None)
    user = ctx.vault  # a process holding the key file, as `serve` does for its whole life
    with pytest.raises(ConfigError, match=r"^Another mdmbot process on this host uses the key"):
        rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)
    del user, ctx.__dict__["vault"]
    with ctx.unit_of_work() as session:  # another host's `serve` sweeps this database
        assert lease.acquire(session, lease.SCHEDULER, "web-2:4242:7f1e", NOW, timedelta(minutes=1))
    with pytest.raises(ConfigError, match=r"^mdmbot is serving this database \(web-2:4242 holds"):
        rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)
    assert read_key_file(tmp_path / KEY_FILE_NAME) == old
    assert sorted(p.name for p in tmp_path.glob("secret.key*")) == ["secret.key", "secret.key.lock"]
    with ctx.unit_of_work() as session:
        lease.release(session, lease.SCHEDULER, "web-2:4242:7f1e")
    assert rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)[1] == 4
    ctx.engine.dispose()


def test_a_key_error_names_the_key_file_when_the_key_came_from_it(tmp_path: Path) -> None:
    url = _file_keyed(tmp_path)
    ctx = context(url, tmp_path, key=None)
    stranger = Vault(Fernet.generate_key()).encrypt("sealed by another key")
    with pytest.raises(ConfigError) as refused:
        ctx.vault.decrypt(stranger)
    assert refused.value.message == (
        f"The key in {tmp_path / KEY_FILE_NAME} does not open the stored token secrets: it is "
        "not the key they were encrypted with."
    )
    ctx.engine.dispose()


def test_an_old_key_is_forgotten_only_once_nothing_needs_it(tmp_path: Path) -> None:
    url, backups = _file_keyed(tmp_path), tmp_path / "backups"
    backups.mkdir()
    ctx = context(url, tmp_path, key=None)
    old_id, nightly = ctx.vault.key_id(), backup_path(backups, NOW)
    take_backup(ctx.engine, ctx.vault, nightly, force=False, now=NOW, version="test")
    del ctx.__dict__["vault"]
    rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)
    ctx.engine.dispose()
    restore_backup(url, configured_keys(None, tmp_path), nightly, force=True)
    still = f"^This database's secrets are still encrypted with {old_id} "
    with pytest.raises(InvalidInput, match=still):
        forget_old_key(ctx.engine, tmp_path, old_id, backups)
    rotate_key_file(ctx.engine, tmp_path, OPERATOR, NOW)
    with pytest.raises(InvalidInput, match=f"^1 scheduled backups in {backups} need {old_id} "):
        forget_old_key(ctx.engine, tmp_path, old_id, backups)
    for wrong in ("key-0", f"../{tmp_path.name}/secret.key.old-{old_id}"):
        with pytest.raises(InvalidInput, match=r"^There is no kept old key .* \(kept: key-"):
            forget_old_key(ctx.engine, tmp_path, wrong, backups)
    nightly.unlink()  # pruned
    forgotten = forget_old_key(ctx.engine, tmp_path, old_id, backups)
    assert forgotten.name == f"secret.key.old-{old_id}" and not forgotten.exists()
    ctx.engine.dispose()
    assert len(_secrets(url, tmp_path, None)) == 2, "the current key opens every token"


def test_a_key_file_whose_lock_cannot_be_made_still_opens(tmp_path: Path) -> None:
    url = _file_keyed(tmp_path)
    (tmp_path / "secret.key.lock").unlink()
    (tmp_path / "secret.key.lock").mkdir()  # as unwritable as a read-only mount, even for root
    assert len(_secrets(url, tmp_path, None)) == 2
