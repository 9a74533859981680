"""Run every benchmark and rewrite the results in bench/README.md.

    python -m bench.run            # the full run (a few minutes)
    python -m bench.run --quick    # fewer requests and repeats (under two minutes)

Options: `--only ack,sweep` runs some benchmarks; `--no-write` leaves the README alone;
`--strict` exits 1 when a target is missed. The README is rewritten only after a complete run of
every benchmark without errors. Run it from the repository root, in the project's
virtual environment, on an otherwise idle machine: the load generator, the servers and the fake
Slack share its cores.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import ack, asm, dep, devices, front, issuance, memory, pg, pipeline, sweep
from bench.common import Row, Section, machine

README = Path(__file__).with_name("README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCHMARKS: dict[str, Callable[[bool], Section]] = {
    "ack": ack.run,
    "sweep": sweep.run,
    "issuance": issuance.run,
    "memory": memory.run,
    "pipeline": pipeline.run,
    "front": front.run,
    "devices": devices.run,
    "dep": dep.run,
    "pg": pg.run,
    "asm": asm.run,
}


def render(sections: list[Section], quick: bool, seconds: float, host: dict[str, str]) -> str:
    """The results block for the README."""
    lines = [
        START,
        "",
        f"Run `python -m bench.run{' --quick' if quick else ''}` "
        f"({'quick: fewer requests and repeats' if quick else 'full'}; took {seconds:.0f} s).",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in host.items()),
        "",
        "| benchmark | figure | baseline (same run) | target | met? |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        lines.extend(_row(row) for row in section.rows)
    for section in sections:
        lines += ["", f"**{section.title}**", ""]
        lines.extend(f"- {detail}" for detail in section.details)
    lines += ["", END]
    return "\n".join(lines)


def _row(row: Row) -> str:
    """One Markdown table line."""
    met = {True: "yes", False: "**no**", None: "—"}[row.met]
    cells = (row.benchmark, row.figure, row.baseline, row.target, met)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def write_readme(block: str) -> None:
    """Replace the results block of bench/README.md (appending one if there is none)."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, rewrite the README."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repeats")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/README.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    host = machine()
    started = time.perf_counter()
    sections: list[Section] = []
    failed = False
    for name in chosen:
        print(f"running {name} …", file=sys.stderr, flush=True)
        began = time.perf_counter()
        try:
            sections.append(BENCHMARKS[name](args.quick))
        except Exception as exc:
            failed = True
            traceback.print_exc()
            sections.append(Section(name, details=[f"failed: {type(exc).__name__}: {exc}"]))
        print(f"  {name} took {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    block = render(sections, args.quick, time.perf_counter() - started, host)
    print(block)
    if not args.no_write and not failed and set(chosen) == set(BENCHMARKS):
        write_readme(block)
        print(f"wrote {README}", file=sys.stderr)
    missed = any(row.met is False for section in sections for row in section.rows)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
