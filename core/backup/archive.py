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


class BackupReader:
    """An opened backup: its manifest read, nothing trusted until `verify`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            raw = json.loads(self._zip.read(MANIFEST))
            tables = [TableEntry(**t) for t in raw.pop("tables")]
            self.mac = str(raw.pop("mac"))
            self.manifest = Manifest(**raw, tables=tables)
        except FileNotFoundError as exc:
            raise InvalidInput(f"{path} does not exist.") from exc
        except OSError as exc:
            raise InvalidInput(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, AttributeError) as exc:
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

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

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
            return list(json.loads(next(self._lines(handle))))

    def rows(self, name: str) -> Iterator[list[Any]]:
        """The rows of one table, as stored (values in the order of `columns`)."""
        decode = json.JSONDecoder().decode
        with self._open(name) as handle:
            lines = self._lines(handle)
            next(lines)
            for line in lines:
                yield decode(line.decode())

    def _open(self, name: str) -> IO[bytes]:
        try:
            return self._zip.open(table_member(name))
        except KeyError as exc:
            raise self._edited(f"table {name} is missing") from exc

    def _lines(self, handle: IO[bytes]) -> Iterator[bytes]:
        try:
            yield from handle
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._edited("its data is damaged") from exc

    def _edited(self, what: str) -> InvalidInput:
        return InvalidInput(
            f"{self.path} was altered or damaged ({what}); nothing was restored."
        )
