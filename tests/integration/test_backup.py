"""Backups and restores through the core use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlmodel import select

from core import db
from core.backup.archive import MANIFEST, BackupReader, table_member
from core.backup.restore import restore_backup
from core.backup.snapshot import take_backup
from core.errors import MdmbotError
from core.models import Token
from core.tokens import servers
from core.vault import key_from_setting, keys_from_setting
from tests.conftest import NOW, PG_URL, postgres_schema
from tests.dep_client import add_server
from tests.integration.backup_support import (
    KEY,
    all_rows,
    as_older,
    context,
    resealed,
    rewrite,
    seed,
)

KEYS = (keys_from_setting(KEY), "MDMBOT_SECRET_KEY")
DEVICE_TABLES = ("defaultassignment", "device", "devicechange", "profile")  # added by 0008


@pytest.fixture
def backup(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A seeded database (SQLite or PostgreSQL) and a backup of it."""
    ctx = context(database_url, tmp_path)
    seed(ctx)
    path = tmp_path / "mdmbot.mdmbackup"
    take_backup(ctx.engine, ctx.vault, path, force=False, now=NOW, version="test")
    ctx.engine.dispose()
    yield database_url, path


def _targets() -> list[str]:
    return ["sqlite", "sqlite-migrated", "postgresql"] if PG_URL else ["sqlite", "sqlite-migrated"]


@pytest.fixture(params=_targets())
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database to restore into (its kind and URL): SQLite, or a new PostgreSQL schema."""
    kind: str = request.param
    if kind.startswith("sqlite"):
        yield kind, f"sqlite:///{tmp_path / 'restored' / 'mdmbot.db'}"
        return
    with postgres_schema(migrate=False) as url:
        yield kind, url


def test_a_backup_restores_every_row_on_either_engine(
    backup: tuple[str, Path], target: tuple[str, str], tmp_path: Path
) -> None:
    source, path = backup
    kind, url = target
    if kind == "sqlite-migrated":  # `mdmbot db upgrade` ran: empty tables are no refusal
        db.upgrade(url)
    manifest = restore_backup(url, KEYS, path, force=False)
    assert all_rows(url) == all_rows(source)
    assert sum(t.rows for t in manifest.tables) == sum(map(len, all_rows(url).values()))
    ctx = context(url, tmp_path)
    with ctx.unit_of_work() as session:  # new ids follow the restored ones
        add_server(session, ctx.vault, "After Restore", NOW, actor="UADMIN01")
        names = [s.name for s in servers.list_servers(session)]
        secrets = [ctx.vault.decrypt(t.secrets) for t in session.exec(select(Token))]
    ctx.engine.dispose()
    assert sorted(names) == ["After Restore", "District Jamf", "Lab Mosyle"]
    assert len(secrets) == 3


def test_the_file_is_private_and_never_replaced_without_force(
    backup: tuple[str, Path], tmp_path: Path
) -> None:
    source, path = backup
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    ctx = context(source, tmp_path)
    with pytest.raises(MdmbotError, match="already exists; pass --force"):
        take_backup(ctx.engine, ctx.vault, path, force=False, now=NOW, version="test")
    assert path.read_bytes() == before
    take_backup(ctx.engine, ctx.vault, path, force=True, now=NOW, version="test")
    ctx.engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mdmbot-backup-")]
    with zipfile.ZipFile(path) as archive:
        assert b"secrets" in archive.read(table_member("token"))
        text = b"".join(archive.read(n) for n in archive.namelist())
    sealed = all_rows(source)["token"][0]["secrets"]
    assert sealed.encode() in text, "secrets are stored exactly as encrypted"


def test_an_older_backup_is_upgraded_while_restoring(
    backup: tuple[str, Path], tmp_path: Path
) -> None:
    _, path = backup
    old = tmp_path / "from-0008.mdmbackup"
    # What 0009 (MDM connections, one consumer key per server), 0011 (reminder, superseded
    # messages), 0012 (the School Manager API's tables), 0013 (Apple mode's columns), 0014
    # (Apple mode's sync state) and 0016 (a refused token file) added: absent from a 0008 backup.
    as_older(
        path,
        old,
        key_from_setting(KEY),
        "0008",
        ("mdmconnection", "tokeninstall", "apiaccount", "apiaccesstoken", "apiactivity",
         "applesync"),
        {
            "server": ("consumer_key", "apple_id", "apple_last_connected_at", "token_refused",
                       "token_refused_digest", "token_refused_by", "token_refused_at",
                       "token_refused_alerted_at"),
            "token": ("access_digest", "source"),
            "rotationcase": ("reminder_ts",),
            "alertdelivery": ("superseded_at",),
        },
    )
    url = f"sqlite:///{tmp_path / 'upgraded.db'}"
    restore_backup(url, KEYS, old, force=False)
    rows = all_rows(url)
    assert [s["name"] for s in rows["server"]] == ["District Jamf", "Lab Mosyle"]
    active = {t["server_id"]: t["consumer_key"] for t in rows["token"] if t["status"] == "active"}
    assert {s["id"]: s["consumer_key"] for s in rows["server"]} == active, "0009 ran on restore"
    assert rows["device"], "the devices came along"
    current, head, _ = db.schema_revisions(url)
    assert current == head


def _wrong_key(path: Path, _: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    return path, ([Fernet.generate_key()], "MDMBOT_SECRET_KEY")


def _no_key(path: Path, _: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    return path, None


def _truncated(path: Path, tmp: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    (tmp / "cut").write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    return tmp / "cut", KEYS


def _edited_row(path: Path, tmp: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    with zipfile.ZipFile(path) as archive:
        servers_file = archive.read(table_member("server"))
    edited = servers_file.replace(b"Lab Mosyle", b"Lab Mosylf")
    rewrite(path, tmp / "edited", {table_member("server"): edited})
    return tmp / "edited", KEYS


def _edited_manifest(path: Path, tmp: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read(MANIFEST))
    manifest["schema_revision"] = "0001"  # changed without the key: the seal no longer matches
    rewrite(path, tmp / "edited", {MANIFEST: json.dumps(manifest).encode()})
    return tmp / "edited", KEYS


def _newer_schema(path: Path, tmp: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    resealed(path, tmp / "newer", key_from_setting(KEY), schema_revision="0099")
    return tmp / "newer", KEYS


def _newer_format(path: Path, tmp: Path) -> tuple[Path, tuple[list[bytes], str] | None]:
    resealed(path, tmp / "newer", key_from_setting(KEY), format_version=2)
    return tmp / "newer", KEYS


Refusal = Callable[[Path, Path], tuple[Path, tuple[list[bytes], str] | None]]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_wrong_key, r"does not open .*: it needs the key key-[0-9a-f]{16} \(this one is key-"),
        (_no_key, r"No secret key is configured: put the key this backup needs \(key-"),
        (_truncated, "is not a complete mdmbot backup"),
        (_edited_row, r"was altered or damaged \(table server does not match its manifest\)"),
        (_edited_manifest, r"was altered or damaged \(its manifest was changed\)"),
        (_newer_schema, r"comes from a newer mdmbot \(schema revision 0099; this mdmbot knows"),
        (_newer_format, r"was written by a newer mdmbot \(backup format 2\)"),
    ],
)
def test_a_bad_backup_is_refused_in_one_line_before_anything_is_written(
    backup: tuple[str, Path], tmp_path: Path, damage: Refusal, message: str
) -> None:
    _, path = backup
    bad, keys = damage(path, tmp_path)
    target = tmp_path / "new" / "mdmbot.db"
    with pytest.raises(MdmbotError, match=message) as refused:
        restore_backup(f"sqlite:///{target}", keys, bad, force=False)
    assert "\n" not in refused.value.message
    assert not target.parent.exists(), "nothing was created"


def test_a_database_with_rows_is_refused_unless_forced(
    backup: tuple[str, Path], tmp_path: Path
) -> None:
    source, path = backup
    ctx = context(source, tmp_path)
    with ctx.unit_of_work() as session:
        add_server(session, ctx.vault, "Written Later", NOW, actor="UADMIN01")
    ctx.engine.dispose()
    before = all_rows(source)
    refused = r"^The target database is not empty \(\d+ of mdmbot's tables hold"
    with pytest.raises(MdmbotError, match=refused):
        restore_backup(source, KEYS, path, force=False)
    assert all_rows(source) == before
    restore_backup(source, KEYS, path, force=True)
    assert [s["name"] for s in all_rows(source)["server"]] == ["District Jamf", "Lab Mosyle"]


def test_a_failed_restore_leaves_the_database_as_it_was(
    backup: tuple[str, Path], tmp_path: Path
) -> None:
    source, path = backup
    before = all_rows(source)
    with zipfile.ZipFile(path) as archive:
        rows = archive.read(table_member("server"))
    clash = rows + rows.splitlines(keepends=True)[1]  # the same id twice: the insert fails
    broken = tmp_path / "clash.mdmbackup"
    reader = BackupReader(path)
    reader.close()
    tables = [t.__dict__ for t in reader.manifest.tables]
    for t in tables:
        if t["name"] == "server":
            t["rows"], t["sha256"] = t["rows"] + 1, hashlib.sha256(clash).hexdigest()
    rewrite(path, tmp_path / "step", {table_member("server"): clash})
    resealed(tmp_path / "step", broken, key_from_setting(KEY), tables=tables)
    with pytest.raises(sa.exc.IntegrityError):
        restore_backup(source, KEYS, broken, force=True)
    assert all_rows(source) == before


def test_restore_leaves_other_tables_alone_and_accepts_a_freshly_upgraded_database(
    backup: tuple[str, Path], target: tuple[str, str], tmp_path: Path
) -> None:
    _, path = backup
    url = target[1]
    (tmp_path / "restored").mkdir(exist_ok=True)
    db.upgrade(url)
    host2 = context(url, tmp_path / "restored", key=Fernet.generate_key().decode())
    _ = host2.vault  # what `mdmbot db upgrade` writes: the new host's key check
    host2.engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # another application's table in the same database
        conn.exec_driver_sql("CREATE TABLE invoice (id INTEGER PRIMARY KEY, total INTEGER)")
        conn.exec_driver_sql("INSERT INTO invoice VALUES (1, 990)")
    try:
        restore_backup(url, KEYS, path, force=False)
        restore_backup(url, KEYS, path, force=True)
        with engine.connect() as conn:
            invoices = conn.exec_driver_sql("SELECT id, total FROM invoice").all()
    finally:
        engine.dispose()
    assert invoices == [(1, 990)]
    assert [s["name"] for s in all_rows(url)["server"]] == ["District Jamf", "Lab Mosyle"]
