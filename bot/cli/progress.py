"""The progress bar long commands draw on stderr at a terminal (tqdm), and nowhere else."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from tqdm import tqdm

from bot.context import AppContext
from core.progress import Progress

FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]"
OPEN_ENDED = "{desc}: {n_fmt} {unit} [{elapsed}]"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """The --quiet option of a command that shows its progress at a terminal."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="draw no progress bar at a terminal"
    )


class Bars:
    """One bar per step of the work; a finished step's bar stays on its own line."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._what: str | None = None
        self._bar: tqdm[NoReturn] | None = None

    def __call__(self, what: str, done: int, total: int | None, unit: str) -> None:
        """Show `done` of `total` for the step `what` (a new step starts a new bar)."""
        if what != self._what:
            self.close()
            self._what = what
            self._bar = None if total == 0 else self._new(what, total, unit)
        if self._bar is not None and done != self._bar.n:
            self._bar.update(done - self._bar.n)

    def _new(self, what: str, total: int | None, unit: str) -> tqdm[NoReturn]:
        try:
            sized = min(os.get_terminal_size(sys.stderr.fileno())) > 0
        except OSError:
            sized = False
        return tqdm(
            total=total,
            desc=what,
            unit=unit,
            file=sys.stderr,
            bar_format=OPEN_ENDED if total is None else FORMAT,
            dynamic_ncols=sized,
            ncols=None if sized else 80,  # a terminal that reports no size: 80 x 24
            nrows=None if sized else 24,
            mininterval=self.interval,
            delay=self.interval,
        )

    def close(self) -> None:
        """Leave the current bar (if it was ever drawn) as it stands, on its own line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def progress_bar(ctx: AppContext, args: argparse.Namespace) -> Iterator[Progress | None]:
    """A progress callback drawing on a terminal's stderr; None without one, or with --quiet or
    --json (their output stays exactly as it was)."""
    if getattr(args, "quiet", False) or getattr(args, "json", False) or not sys.stderr.isatty():
        yield None
        return
    bars = Bars(ctx.settings.mdmbot_progress_interval)
    try:
        yield bars
    finally:
        bars.close()
