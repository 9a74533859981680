"""`mdmbot backup`, `restore` and `key rotate` as an operator runs them: one line each, exit codes,
nothing written by a refusal, no secret in the output."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.fernet import Fernet

from core import db
from core.backup.archive import MANIFEST
from core.vault import KEY_FILE_NAME, fingerprint, read_key_file
from tests.e2e.drill_support import cli
from tests.integration.backup_support import KEY, context, rewrite, seed
from tests.processes import BotProcess, free_port, mdmbot_command


def _env(data: Path, key: str | None = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDMBOT_", "SLACK_"))}
    env["MDMBOT_DATA_DIR"] = str(data)
    if key:
        env["MDMBOT_SECRET_KEY"] = key
    return env


def _seeded(data: Path, key: str | None = KEY) -> None:
    url = f"sqlite:///{data / 'mdmbot.db'}"
    db.upgrade(url)
    ctx = context(url, data, key)
    seed(ctx)
    ctx.engine.dispose()


def _one_line(done: subprocess.CompletedProcess[str], code: int, start: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(f"mdmbot: {start}") and done.stderr.count("\n") == 1, done.stderr
    assert KEY not in done.stdout + done.stderr


def test_backup_restore_and_their_refusals(tmp_path: Path) -> None:
    _seeded(tmp_path / "data")
    env, path = _env(tmp_path / "data"), tmp_path / "nightly.mdmbackup"
    made = cli(env, "backup", str(path))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"Backup written to {path}: ")
    assert "open only with the key key-" in made.stdout and KEY not in made.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "cut.mdmbackup").write_bytes(path.read_bytes()[:-200])
    other = Fernet.generate_key().decode()
    with ThreadPoolExecutor(6) as pool:
        again = pool.submit(cli, env, "backup", str(path))
        check = pool.submit(cli, env, "backup", str(path), "--print-key-check")
        check_other = pool.submit(
            cli, _env(tmp_path / "d", other), "backup", str(path), "--print-key-check"
        )
        wrong = pool.submit(cli, _env(tmp_path / "a", other), "restore", str(path))
        cut = pool.submit(cli, _env(tmp_path / "b"), "restore", str(tmp_path / "cut.mdmbackup"))
        full = pool.submit(cli, env, "restore", str(path))
        one_key = pool.submit(cli, env, "key", "rotate")
    _one_line(again.result(), 1, f"{path} already exists; pass --force to replace it.")
    assert check.result().returncode == 0
    assert check.result().stdout.splitlines()[1] == "The configured key opens it."
    assert check_other.result().returncode == 1
    assert check.result().stdout.splitlines()[0] == check_other.result().stdout.splitlines()[0]
    _one_line(wrong.result(), 2, f"MDMBOT_SECRET_KEY does not open {path}: it needs the key key-")
    _one_line(cut.result(), 1, "")
    assert "is not a complete mdmbot backup" in cut.result().stderr
    _one_line(full.result(), 1, "The target database is not empty")
    _one_line(one_key.result(), 2, 'MDMBOT_SECRET_KEY holds one key: set it to "NEW,OLD"')
    assert not {"a", "b", "d"} & {p.name for p in tmp_path.iterdir()}, "nothing written"

    restored = cli(_env(tmp_path / "c"), "restore", str(path))
    assert restored.returncode == 0, restored.stderr
    listed = cli(_env(tmp_path / "c"), "server", "list")
    assert "District Jamf" in listed.stdout and "Lab Mosyle" in listed.stdout
    info = cli(_env(tmp_path / "c"), "db", "info")
    assert info.stdout.endswith(f"Schema:   revision {db.packaged_head()} (up to date)\n"), info


def _serving(data: Path, log: Path) -> BotProcess:
    """`mdmbot serve --no-slack` on the data directory's database and key file, answering."""
    port = free_port()
    process = BotProcess(
        _env(data, None), log, "serve", "--no-slack", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(free_port()),
        "--dep-host", "127.0.0.1", "--dep-port", str(free_port()),
    )  # fmt: skip

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    process.wait_until(healthy)
    return process


def test_the_key_file_is_rotated_in_place_and_the_old_key_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _seeded(data, key=None)
    old = read_key_file(data / KEY_FILE_NAME)
    assert old
    path = tmp_path / "before.mdmbackup"
    assert cli(_env(data, None), "backup", str(path)).returncode == 0

    serving = _serving(data, tmp_path / "serve.log")
    try:
        refused = cli(_env(data, None), "key", "rotate")
    finally:
        assert serving.terminate() == 0
    _one_line(refused, 2, f"Another mdmbot process on this host uses the key in {data}/secret.key")
    assert refused.stderr.endswith("Nothing was changed.\n")
    assert read_key_file(data / KEY_FILE_NAME) == old and not list(data.glob("*.old-*"))

    rotated = cli(_env(data, None), "key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("Wrote a new key key-")
    new = read_key_file(data / KEY_FILE_NAME)
    assert new and new != old and new[0].decode() not in rotated.stdout
    kept = data / f"secret.key.old-{fingerprint(old[0])}"
    assert f"The old key is kept in {kept}: backups taken before need it" in rotated.stdout
    assert read_key_file(kept) == old and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "District Jamf" in cli(_env(data, None), "server", "list").stdout
    check = cli(_env(data, None), "backup", str(path), "--print-key-check")
    assert (check.returncode, check.stdout.splitlines()[1]) == (0, "The configured key opens it.")

    elsewhere = {**_env(data, None), "MDMBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    restored = cli(elsewhere, "restore", str(path))
    assert restored.returncode == 0, restored.stderr
    assert "District Jamf" in cli(elsewhere, "server", "list").stdout, "opened by the kept key"


def _inflating(path: Path, size: int = 3 << 29) -> None:
    """A ZIP whose manifest inflates to `size` bytes (1.5 GiB) of spaces from ~1.5 MB."""
    chunk = b" " * (1 << 24)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)  # the same every time
    data = block * (size // len(chunk)) + deflate.flush()
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    name = MANIFEST.encode()
    sizes = (crc, len(data), size, len(name))
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, *sizes, 0) + name
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, *sizes, *[0] * 6)
    central += name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local + data), 0)
    path.write_bytes(local + data + central + end)


def _manifest(path: Path, source: Path, **changed: object) -> None:
    """A copy of the backup at `source` with manifest fields (or the first table's) changed."""
    with zipfile.ZipFile(source) as archive:
        manifest = json.loads(archive.read(MANIFEST))
    for key, value in changed.items():
        (manifest["tables"][0] if key == "rows" else manifest)[key] = value
    rewrite(source, path, {MANIFEST: json.dumps(manifest).encode()})


# Linux keeps a process's peak memory across exec, and a child spawned straight from the test
# worker starts with the worker's peak (vfork shares its memory): a small launcher in between
# spawns `mdmbot` and reports only that grandchild's own peak.
_LAUNCHER = """
import os, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
timer = threading.Timer(60, child.kill)
timer.start()
_, status, usage = os.wait4(child.pid, 0)
timer.cancel()
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss >> 10)
"""


def _restore_measured(env: dict[str, str], path: str, log: Path) -> tuple[int, str, int]:
    """`mdmbot restore PATH`: its exit code, stderr and peak memory in MiB."""
    with log.open("w") as stderr:
        launched = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *mdmbot_command(), "restore", path],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=90, check=True,
        )  # fmt: skip
    code, peak = (int(word) for word in launched.stdout.split())
    return code, log.read_text(), peak


HOSTILE = {
    "a device": ("/dev/zero", "/dev/zero is not a regular file; name a backup file."),
    "a FIFO": ("fifo", "{path} is not a regular file; name a backup file."),
    "a manifest of 1.5 GiB": (
        "bomb", "{path} is not an mdmbot backup (its manifest is larger than 1024 KiB)"
    ),
    "a nested manifest": ("nested", "{path} is not an mdmbot backup (its manifest is nested too"),
    "a row count as text": (
        "rows", "{path} is not an mdmbot backup (its manifest's tables[0].rows must be a whole"
    ),
    "a format version as text": (
        "version", "{path} is not an mdmbot backup (its manifest's format_version must be a"
    ),
}


def test_hostile_files_are_refused_in_one_line_without_memory_blowing_up(tmp_path: Path) -> None:
    _seeded(tmp_path / "data")
    good = tmp_path / "good.mdmbackup"
    assert cli(_env(tmp_path / "data"), "backup", str(good)).returncode == 0
    os.mkfifo(tmp_path / "fifo")
    _inflating(tmp_path / "bomb")
    with zipfile.ZipFile(tmp_path / "nested", "w") as archive:
        archive.writestr(MANIFEST, "[" * 200_000 + "]" * 200_000)
    _manifest(tmp_path / "rows", good, rows="30")
    _manifest(tmp_path / "version", good, format_version="2")
    env = _env(tmp_path / "target")
    with ThreadPoolExecutor(3) as pool:
        runs = {
            case: pool.submit(
                _restore_measured, env, str(tmp_path / name), tmp_path / f"{name[-4:]}.log"
            )
            for case, (name, _) in HOSTILE.items()
        }
    for case, (name, start) in HOSTILE.items():
        code, stderr, peak = runs[case].result()
        said = start.format(path=tmp_path / name)
        assert (code, stderr.startswith(f"mdmbot: {said}"), stderr.count("\n")) == (1, True, 1), (
            case, stderr,
        )  # fmt: skip
        assert peak < 200, f"{case}: {peak} MiB"
    assert not (tmp_path / "target").exists(), "nothing written"
