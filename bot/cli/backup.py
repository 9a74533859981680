"""`mdmbot backup`, `mdmbot restore` and `mdmbot key rotate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bot.cli.progress import add_quiet, progress_bar
from bot.context import AppContext
from core.backup.archive import BackupReader, Manifest, installed_version
from core.backup.oldkeys import forget_old_key
from core.backup.restore import restore_backup
from core.backup.rotate import rotate_env_key, rotate_key_file
from core.backup.snapshot import take_backup
from core.roles import Actor
from core.vault import KEY_FILE_NAME, Vault, configured_keys, fingerprint, old_key_path


def reads_no_database(args: argparse.Namespace) -> bool:
    """`restore` builds the schema itself; `backup --print-key-check` reads only the file."""
    return bool(args.group == "restore" or getattr(args, "print_key_check", False))


def add_parsers(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The backup, restore and key commands."""
    text = "write a consistent backup of the database (secrets stay encrypted)"
    p = groups.add_parser("backup", help=text, description=text)
    p.set_defaults(handler=backup)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace FILE if it already exists")
    p.add_argument(
        "--print-key-check",
        action="store_true",
        help="only show which key FILE (an existing backup) needs; write nothing",
    )
    add_quiet(p)
    text = "restore a backup into an empty database (MDMBOT_DATABASE_URL)"
    p = groups.add_parser("restore", help=text, description=text)
    p.set_defaults(handler=restore)
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace mdmbot's tables in the target database (other tables stay)",
    )
    add_quiet(p)
    keys = groups.add_parser("key", help="rotate the secret key")
    k = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = "re-encrypt every stored secret with a new secret key"
    p = k.add_parser("rotate", help=text, description=text)
    p.set_defaults(handler=key_rotate)
    add_quiet(p)
    text = "delete an old key kept by `key rotate` once no backup needs it"
    p = k.add_parser("forget", help=text, description=text)
    p.set_defaults(handler=key_forget)
    p.add_argument("key_id", metavar="KEY-ID", help="the old key's id (key-…)")


def _rows(manifest: Manifest) -> str:
    rows = sum(t.rows for t in manifest.tables)
    return f"{rows} {'row' if rows == 1 else 'rows'} in {len(manifest.tables)} tables"


def backup(ctx: AppContext, args: Any) -> int:
    """Write the backup file, or with --print-key-check name the key an existing one needs."""
    path = Path(args.file)
    if args.print_key_check:
        reader = BackupReader(path)
        reader.close()
        manifest = reader.manifest
        keys = configured_keys(ctx.settings.mdmbot_secret_key, ctx.settings.mdmbot_data_dir)
        opens = keys is not None and reader.opening_key(Vault(*keys[0])) is not None
        print(f"{path} needs the secret key {manifest.key_id} (taken {manifest.created_at}).")
        print("The configured key opens it." if opens else "The configured key does NOT open it.")
        return 0 if opens else 1
    with progress_bar(ctx, args) as progress:
        manifest = take_backup(
            ctx.engine,
            ctx.vault,
            path,
            force=args.force,
            now=ctx.now(),
            version=installed_version(),
            progress=progress,
        )
    print(
        f"Backup written to {path}: {_rows(manifest)} (schema revision "
        f"{manifest.schema_revision}). Its secrets open only with the key {manifest.key_id}: "
        "keep that key backed up separately."
    )
    return 0


def restore(ctx: AppContext, args: Any) -> int:
    """Restore a backup into the configured database."""
    settings = ctx.settings
    keys = configured_keys(settings.mdmbot_secret_key, settings.mdmbot_data_dir)
    with progress_bar(ctx, args) as progress:
        manifest = restore_backup(
            settings.database_url, keys, Path(args.file), force=args.force, progress=progress
        )
    target = sa.make_url(settings.database_url).render_as_string(hide_password=True)
    print(
        f"Restored {args.file} (taken {manifest.created_at}, schema revision "
        f"{manifest.schema_revision}) into {target}: {_rows(manifest)}. Start mdmbot with the "
        "same secret key."
    )
    return 0


def key_rotate(ctx: AppContext, args: Any) -> int:
    """Re-encrypt every secret with the new key (MDMBOT_SECRET_KEY="NEW,OLD" or the key file)."""
    settings, actor = ctx.settings, Actor("operator", operator=True)
    if settings.mdmbot_secret_key:
        with progress_bar(ctx, args) as progress:
            vault, changed = rotate_env_key(
                ctx.engine,
                settings.mdmbot_secret_key,
                settings.mdmbot_data_dir,
                actor,
                ctx.now(),
                progress,
            )
        print(
            f"Re-encrypted {changed} stored secrets with the new key {vault.key_id()}. Now set "
            "MDMBOT_SECRET_KEY to the new key alone on every replica; older backups still need "
            "the old key."
        )
        return 0
    data_dir = settings.mdmbot_data_dir
    with progress_bar(ctx, args) as progress:
        vault, changed = rotate_key_file(ctx.engine, data_dir, actor, ctx.now(), progress)
    kept = old_key_path(data_dir, fingerprint(vault.keys[1]))
    print(
        f"Wrote a new key {vault.key_id()} to {data_dir / KEY_FILE_NAME} and re-encrypted "
        f"{changed} stored secrets with it. Back up the new key file now. The old key is kept in "
        f"{kept}: backups taken before need it (restore finds it there); once you keep none "
        f"of them, delete it with `mdmbot key forget {fingerprint(vault.keys[1])}`."
    )
    return 0


def key_forget(ctx: AppContext, args: Any) -> int:
    """Delete a kept old key that neither the database nor a scheduled backup needs."""
    settings = ctx.settings
    path = forget_old_key(
        ctx.engine, settings.mdmbot_data_dir, args.key_id, settings.mdmbot_backup_dir
    )
    print(f"Deleted the old key {args.key_id} ({path}): backups taken with it no longer restore.")
    return 0
