"""Long commands show a progress bar on a terminal's stderr, and print exactly what they always
printed anywhere else (pipes, cron, CI)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet

from core import db
from tests.conftest import NOW
from tests.dep_client import add_server
from tests.devices_support import csv_of, serial
from tests.e2e.test_cli import MDMBOT
from tests.integration.backup_support import KEY, context
from tests.processes import run_cli

DEVICES = 3000
SERVERS = 12
NEW_KEY = Fernet.generate_key().decode()
FRAME = re.compile(
    r"(?P<what>[A-Z][a-z -]+):\s+(?P<percent>\d+)%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) "
    r"(?P<unit>[a-z]+) \[\d\d:\d\d<(?:\?|\d\d:\d\d)\]\s*"
)


@dataclass
class Run:
    """One finished command: exit code, stdout, and what reached stderr."""

    code: int
    stdout: str
    stderr: str

    def frames(self) -> list[tuple[str, int, int, str]]:
        """Every bar drawn, in order: (what, done, total, unit); nothing else may be there."""
        parts = [p for p in re.split(r"[\r\n]+", self.stderr) if p.strip()]
        matched = [FRAME.fullmatch(p) for p in parts]
        assert all(matched), [p for p, m in zip(parts, matched, strict=True) if not m]
        return [(m["what"], int(m["done"]), int(m["total"]), m["unit"]) for m in matched if m]


def _env(data: Path, key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDMBOT_", "SLACK_"))}
    return env | {"MDMBOT_DATA_DIR": str(data), "MDMBOT_SECRET_KEY": key} | extra


# A shell starts a command with Ctrl-C (SIGINT) and SIGQUIT at their defaults; a test worker may
# ignore them, and an ignored signal stays ignored across exec (POSIX), so reset them first.
AS_A_SHELL_STARTS_IT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.signal(signal.SIGQUIT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def at_terminal(env: dict[str, str], cwd: Path, *args: str, interrupt: str = "") -> Run:
    """Run `mdmbot ARGS` with stderr on a 100-column terminal (SIGINT once `interrupt` shows).

    The terminal's output is stopped (as ^S stops it) except while this side waits for the
    next frame, so that mdmbot cannot run ahead of what was read: a Ctrl-C sent when
    `interrupt` shows reaches it at its next frame, however busy the machine is.
    """
    main, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    termios.tcflow(terminal, termios.TCOOFF)
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", AS_A_SHELL_STARTS_IT, *MDMBOT, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    assert process.stdout is not None
    finished: list[bytes] = []
    reader = threading.Thread(target=lambda: finished.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    seen, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            termios.tcflow(terminal, termios.TCOON)
            ready = select.select([main], [], [], 0.2)[0]
            termios.tcflow(terminal, termios.TCOOFF)
            if ready:
                seen += os.read(main, 65536)
            elif process.poll() is not None:
                break
            if interrupt and interrupt.encode() in seen:
                process.send_signal(signal.SIGINT)
                interrupt = ""
        process.wait(timeout=60)
        reader.join(60)
    finally:
        os.close(terminal)
        os.close(main)
    return Run(process.returncode, b"".join(finished).decode(), seen.decode())


def piped(env: dict[str, str], cwd: Path, *args: str) -> Run:
    """Run `mdmbot ARGS` with stdout and stderr both pipes, as cron or CI does."""
    done = run_cli(list(args), env=env, cwd=cwd, timeout=120, universal_newlines=False)
    return Run(done.returncode, done.stdout, done.stderr)


def _prepare(home: Path) -> None:
    """Linked servers (each with an encrypted token), a CSV of devices and their serials."""
    data = home / "data"
    url = f"sqlite:///{data / 'mdmbot.db'}"
    db.upgrade(url)
    ctx = context(url, data)
    with ctx.unit_of_work() as session:
        for number in range(SERVERS):
            add_server(session, ctx.vault, f"Server {number:02}", NOW, actor="UADMIN01")
    ctx.engine.dispose()
    serials = [serial(i) for i in range(DEVICES)]
    (home / "ipads.csv").write_bytes(csv_of(serials))
    (home / "serials.txt").write_text("\n".join(serials) + "\n")


COMMANDS = {
    "import": ("devices", "import", "ipads.csv"),
    "assign": ("devices", "assign", "Server 00", "--file", "serials.txt"),
    "unassign": ("devices", "unassign", "--file", "serials.txt"),
    "backup": ("backup", "nightly.mdmbackup"),
    "rotate": ("key", "rotate"),
    "restore": ("restore", "nightly.mdmbackup"),
}


def _session(home: Path, run: Callable[..., Run]) -> dict[str, Run]:
    """Every long command once, in order, in a prepared home, through `run` (terminal or pipes)."""
    data, restored = home / "data", home / "restored"
    runs = {}
    for name, args in COMMANDS.items():
        key = f"{NEW_KEY},{KEY}" if name == "rotate" else KEY
        env = _env(restored if name == "restore" else data, key)
        runs[name] = run(env, home, *args)
    return runs


def test_a_terminal_sees_each_step_advance_and_pipes_get_todays_output(tmp_path: Path) -> None:
    _prepare(tmp_path / "tty")
    _prepare(tmp_path / "pipe")
    with ThreadPoolExecutor(2) as pool:
        terminal = pool.submit(_session, tmp_path / "tty", _at_terminal_fast)
        plain = pool.submit(_session, tmp_path / "pipe", piped)
    tty_runs, pipe_runs = terminal.result(), plain.result()

    # Without a terminal: today's one-line summaries, byte for byte; nothing on stderr.
    for name, run in pipe_runs.items():
        assert (run.code, run.stderr) == (0, ""), (name, run.stderr)
    rows = r"(\d+) rows in \d+ tables"
    revision, key_id = r"schema revision (\w+)", r"key-[0-9a-f]{16}"
    expected = {
        "import": re.escape(f"Imported {DEVICES} devices: {DEVICES} new, 0 updated, 0 unchanged."),
        "assign": re.escape(f"Assigned {DEVICES} devices to “Server 00”."),
        "unassign": re.escape(f"Unassigned {DEVICES} devices (0 already were)."),
        "backup": rf"Backup written to nightly\.mdmbackup: {rows} \({revision}\)\. Its secrets "
        rf"open only with the key {key_id}: keep that key backed up separately\.",
        "rotate": rf"Re-encrypted {SERVERS + 2} stored secrets with the new key {key_id}\. Now "
        r"set MDMBOT_SECRET_KEY to the new key alone on every replica; older backups still "
        r"need the old key\.",
        "restore": r"Restored nightly\.mdmbackup \(taken \S+, schema revision \w+\) into "
        rf"sqlite:///\S+/restored/mdmbot\.db: {rows}\. Start mdmbot with the same secret key\.",
    }
    for name, pattern in expected.items():
        assert re.fullmatch(pattern + "\n", pipe_runs[name].stdout), (name, pipe_runs[name].stdout)

    # At a terminal: the same stdout, and on stderr the bars of each step, redrawn as it advances.
    steps = {
        "import": [("Reading the file", "lines", DEVICES + 1), ("Importing devices", "devices", 0)],
        "assign": [("Looking up devices", "devices", 0), ("Assigning devices", "devices", 0)],
        "unassign": [("Looking up devices", "devices", 0), ("Unassigning devices", "devices", 0)],
        "backup": [("Backing up", "rows", 0)],
        "rotate": [("Re-encrypting secrets", "rows", SERVERS + 2)],
        "restore": [("Checking the backup", "rows", 0), ("Restoring", "rows", 0)],
    }
    backed_up = int(re.findall(r"(\d+) rows in", pipe_runs["backup"].stdout)[0])
    for name, run in tty_runs.items():
        assert run.code == 0, (name, run.stderr)
        same = pipe_runs[name].stdout.replace(str(tmp_path / "pipe"), str(tmp_path / "tty"))
        assert re.sub(r"taken \S+,", "", run.stdout) == re.sub(r"taken \S+,", "", same), name
        frames = run.frames()
        assert [f[0] for f in frames] == sorted(
            (f[0] for f in frames), key=[s[0] for s in steps[name]].index
        ), (name, "one bar per step, in order")
        for what, unit, total in steps[name]:
            drawn = [(done, of) for step, done, of, u in frames if step == what and u == unit]
            assert len(drawn) >= 4, (name, what, drawn)
            assert [d for d, _ in drawn] == sorted(d for d, _ in drawn), (name, what, drawn)
            expected_total = total or (DEVICES if unit == "devices" else backed_up)
            assert {of for _, of in drawn} == {expected_total}, (name, what, drawn)
            assert drawn[-1][0] == expected_total, (name, what, "ends at the total")
        assert run.stderr.endswith("\r\n"), "the last bar stays on its own line"


def _at_terminal_fast(env: dict[str, str], cwd: Path, *args: str) -> Run:
    """At a terminal, every report redrawn (MDMBOT_PROGRESS_INTERVAL=0) so that steps show."""
    return at_terminal(env | {"MDMBOT_PROGRESS_INTERVAL": "0"}, cwd, *args)


def test_quiet_draws_nothing_and_ctrl_c_leaves_the_restore_undone(tmp_path: Path) -> None:
    _prepare(tmp_path)
    data, target = tmp_path / "data", tmp_path / "target"
    fast = _env(data, KEY, MDMBOT_PROGRESS_INTERVAL="0")
    assert piped(fast, tmp_path, *COMMANDS["import"]).code == 0
    quiet = at_terminal(fast, tmp_path, "backup", "nightly.mdmbackup", "--quiet")
    assert (quiet.code, quiet.stderr) == (0, "")
    assert quiet.stdout.startswith("Backup written to nightly.mdmbackup: ")

    # Ctrl-C while rows go in: exit 130 as before, no message, and nothing restored.
    into = _env(target, KEY, MDMBOT_PROGRESS_INTERVAL="0")
    stopped = at_terminal(into, tmp_path, "restore", "nightly.mdmbackup", interrupt="Restoring")
    assert (stopped.code, stopped.stdout) == (130, "")
    assert stopped.frames()[-1][0] == "Restoring"
    engine = sa.create_engine(f"sqlite:///{target / 'mdmbot.db'}")
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    again = piped(into, tmp_path, "restore", "nightly.mdmbackup")
    assert (again.code, again.stderr) == (0, "")
    assert again.stdout.startswith("Restored nightly.mdmbackup (taken ")
