"""The backup file: a ZIP archive of one JSON-lines file per table and a signed manifest.

Format version 1 (README, "Backups and disaster recovery"): `tables/NAME.jsonl` holds a JSON
array of the column names, then one JSON array of values per row (times as ISO 8601 UTC);
`manifest.json` names the format,
the schema revision, the creation time, the mdmbot version, the key's fingerprint and check value
and, per table, its row count and SHA-256; an HMAC keyed from the secret key seals the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from core.errors import InvalidInput
from core.progress import SILENT, Tally
from core.vault import Vault

FORMAT = "mdmbot-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAC_PURPOSE = b"mdmbot backup manifest"
MANIFEST_MAX = 1 << 20  # ours: a manifest names ~20 tables in a few kilobytes
LINE_MAX = 16 << 20  # ours: the longest row (a token's sealed secrets) is a few kilobytes
MEMBER_MAX = 1 << 36  # ours: 64 GiB of rows in one table
FIELDS: dict[str, type] = {
    "schema_revision": str,
    "created_at": str,
    "mdmbot_version": str,
    "key_id": str,
    "key_check": str,
    "format": str,
    "format_version": int,
    "mac": str,
}
TABLE_FIELDS: dict[str, type] = {"name": str, "rows": int, "sha256": str}


@dataclass
class TableEntry:
    """One table's file in the archive."""

    name: str
    rows: int
    sha256: str


@dataclass
class Manifest:
    """What a backup holds and which key opens it."""

    schema_revision: str
    created_at: str
    mdmbot_version: str
    key_id: str
    key_check: str
    tables: list[TableEntry] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def body(self) -> bytes:
        """The canonical bytes the MAC covers."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def seal(self, key: bytes) -> str:
        """The manifest's HMAC-SHA256 under `key` (the key that opens the check value)."""
        mac_key = hmac.new(key, MAC_PURPOSE, hashlib.sha256).digest()
        return hmac.new(mac_key, self.body(), hashlib.sha256).hexdigest()


def installed_version() -> str:
    """The installed mdmbot version, recorded in each backup."""
    try:
        return metadata.version("mdmbot")
    except metadata.PackageNotFoundError:
        return "unknown"


def table_member(name: str) -> str:
    """The archive path of a table's rows."""
    return f"tables/{name}.jsonl"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot back up a {type(value).__name__}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode)


def encode_line(values: Sequence[Any]) -> bytes:
    """One JSON line: the column names, or one row's values; times in ISO 8601."""
    return (_ENCODER.encode(values) + "\n").encode()


def write_manifest(archive: zipfile.ZipFile, manifest: Manifest, key: bytes) -> None:
    """Write the manifest with its MAC as the archive's last member."""
    document = {**asdict(manifest), "mac": manifest.seal(key)}
    archive.writestr(MANIFEST, json.dumps(document, indent=2, sort_keys=True) + "\n")


class Malformed(ValueError):
    """A manifest that is JSON but not what mdmbot writes; the message says what is wrong."""


def _checked(raw: Any) -> dict[str, Any]:
    """The manifest's fields, each of its type; Malformed naming the first that is not."""
    if not isinstance(raw, dict):
        raise Malformed("its manifest is not a JSON object")
    _fields(raw, FIELDS, "")
    tables = raw.get("tables")
    if not isinstance(tables, list):
        raise Malformed("its manifest's tables must be a list")
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise Malformed(f"its manifest's tables[{i}] must be an object")
        _fields(table, TABLE_FIELDS, f"tables[{i}].")
    return raw


def _fields(raw: dict[str, Any], kinds: dict[str, type], where: str) -> None:
    for name, kind in kinds.items():
        value = raw.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            kind_name = "whole number" if kind is int else "string"
            raise Malformed(f"its manifest's {where}{name} must be a {kind_name}")


def _open_regular(path: Path) -> IO[bytes]:
    """`path` opened for reading if it is a regular file (never a device or a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput(f"{path} is not a regular file; name a backup file.")
    return os.fdopen(fd, "rb")


class BackupReader:
    """An opened backup: its manifest read, nothing trusted until `verify`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = _open_regular(path)
        except FileNotFoundError as exc:
            raise InvalidInput(f"{path} does not exist.") from exc
        except OSError as exc:
            raise InvalidInput(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        try:
            self._zip = zipfile.ZipFile(self._file)
            raw = _checked(json.loads(self._read_manifest()))
            tables = [TableEntry(**t) for t in raw.pop("tables")]
            self.mac = raw.pop("mac")
            self.manifest = Manifest(**raw, tables=tables)
        except (Malformed, RecursionError) as exc:
            self._file.close()
            why = str(exc) if isinstance(exc, Malformed) else "its manifest is nested too deeply"
            raise InvalidInput(
                f"{path} is not an mdmbot backup ({why}); nothing was restored."
            ) from exc
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, OSError, EOFError) as exc:
            self._file.close()
            raise InvalidInput(
                f"{path} is not a complete mdmbot backup (truncated or not a backup file); "
                "nothing was restored."
            ) from exc
        if self.manifest.format != FORMAT:
            raise InvalidInput(f"{path} is not an mdmbot backup; nothing was restored.")
        if self.manifest.format_version > FORMAT_VERSION:
            raise InvalidInput(
                f"{path} was written by a newer mdmbot (backup format "
                f"{self.manifest.format_version}); upgrade mdmbot to restore it."
            )

    def _read_manifest(self) -> bytes:
        """The manifest's bytes, refused beyond `MANIFEST_MAX` before it is inflated."""
        info = self._zip.getinfo(MANIFEST)
        too_big = Malformed(f"its manifest is larger than {MANIFEST_MAX >> 10} KiB")
        if info.file_size > MANIFEST_MAX:
            raise too_big
        with self._zip.open(info) as member:
            data = member.read(MANIFEST_MAX + 1)
        if len(data) > MANIFEST_MAX:
            raise too_big
        return data

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()
        self._file.close()

    def opening_key(self, vault: Vault) -> bytes | None:
        """The vault's key that opens the backup's check value (None: a different key)."""
        return next((k for k in vault.keys if Vault(k).can_decrypt(self.manifest.key_check)), None)

    def verify(self, key: bytes, tally: Tally = SILENT) -> None:
        """Check the manifest's seal and every table's hash and row count."""
        if not hmac.compare_digest(self.mac, self.manifest.seal(key)):
            raise self._edited("its manifest was changed")
        for entry in self.manifest.tables:
            digest, lines = hashlib.sha256(), 0
            with self._open(entry.name) as handle:
                for line in self._lines(handle):
                    digest.update(line)
                    lines += 1
                    tally.add(lines > 1)  # the first line names the columns
            if digest.hexdigest() != entry.sha256 or lines != entry.rows + 1:
                raise self._edited(f"table {entry.name} does not match its manifest")

    def columns(self, name: str) -> list[str]:
        """The column names of one table's rows."""
        with self._open(name) as handle:
            try:
                names = json.loads(next(self._lines(handle)))
            except (ValueError, RecursionError, StopIteration):
                names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self._edited(f"table {name} does not begin with its column names")
        return names

    def rows(self, name: str) -> Iterator[list[Any]]:
        """The rows of one table, as stored (values in the order of `columns`)."""
        decode = json.JSONDecoder().decode
        with self._open(name) as handle:
            lines = self._lines(handle)
            next(lines)
            for line in lines:
                try:
                    row = decode(line.decode())
                except (ValueError, RecursionError) as exc:
                    raise self._edited(f"a row of table {name} is not a JSON list") from exc
                if not isinstance(row, list):
                    raise self._edited(f"a row of table {name} is not a JSON list")
                yield row

    def _open(self, name: str) -> IO[bytes]:
        try:
            info = self._zip.getinfo(table_member(name))
        except KeyError as exc:
            raise self._edited(f"table {name} is missing") from exc
        if info.file_size > MEMBER_MAX:
            raise self._edited(f"table {name} is larger than {MEMBER_MAX >> 30} GiB")
        return self._zip.open(info)

    def _lines(self, handle: IO[bytes]) -> Iterator[bytes]:
        """The member's lines, none longer than `LINE_MAX` held in memory."""
        try:
            while line := handle.readline(LINE_MAX + 1):
                if len(line) > LINE_MAX:
                    raise self._edited(f"a line is longer than {LINE_MAX >> 20} MiB")
                yield line
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._edited("its data is damaged") from exc

    def _edited(self, what: str) -> InvalidInput:
        """The one-line refusal of a backup that does not match what it says it holds."""
        return InvalidInput(
            f"{self.path} was altered or damaged ({what}); nothing was restored."
        )
