"""core.progress: long work reports to its caller every so often, and always at its total."""

from __future__ import annotations

import pytest

from bot.cli.progress import Bars
from core.progress import SILENT, Progress, Tally

Report = tuple[str, int, int, str]


def _recorder() -> tuple[list[Report], Progress]:
    seen: list[Report] = []

    def progress(what: str, done: int, total: int, unit: str) -> None:
        seen.append((what, done, total, unit))

    return seen, progress


def test_reports_start_every_so_often_and_the_total() -> None:
    seen, progress = _recorder()
    tally = Tally(progress, "Backing up", 1250, "rows", every=500)
    for _ in tally.each(range(1000)):
        pass
    tally.add(250)
    assert [done for _, done, _, _ in seen] == [0, 500, 1000, 1250]
    assert {(what, total, unit) for what, _, total, unit in seen} == {("Backing up", 1250, "rows")}


def test_each_counts_an_item_once_the_next_is_asked_for() -> None:
    seen, progress = _recorder()
    tally = Tally(progress, "Restoring", 3, "rows", every=1)
    items = tally.each("abc")
    assert next(items) == "a" and tally.done == 0
    assert next(items) == "b" and tally.done == 1
    assert list(items) == ["c"] and tally.done == 3
    assert seen[-1] == ("Restoring", 3, 3, "rows")


def test_without_a_listener_nothing_is_counted_and_items_pass_through() -> None:
    items = [1, 2, 3]
    silent = Tally(None, "Importing devices", 3, "devices")
    assert list(silent.each(items)) == items and silent.done == 0
    SILENT.add(10)
    assert SILENT.done == 0


def test_bars_draw_each_step_on_its_own_line_and_an_unknown_total_as_a_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bars = Bars(0)
    for done in (0, 2, 4):
        bars("Checking the backup", done, 4, "rows")
    for done in (0, 500, 1500):
        bars("Fetching devices", done, None, "devices")  # Apple's pages: no total in advance
    bars("Nothing to do", 0, 0, "rows")
    bars.close()
    lines = [line.rstrip() for line in capsys.readouterr().err.split("\n")]
    assert lines[0].split("\r")[-1].startswith("Checking the backup: 100%|")
    assert lines[0].split("\r")[-1].endswith("| 4/4 rows [00:00<00:00]")
    assert lines[1].split("\r")[-1] == "Fetching devices: 1500 devices [00:00]"
    assert lines[2:] == [""], "a step with nothing to do draws nothing"
