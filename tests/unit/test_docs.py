"""The README and docs/: every `mdmbot` command line names real options, the synopsis names them
all, links resolve, and `.env` examples work with `docker run --env-file`."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from bot.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```[a-z]*\n(.*?)^ *```", re.M | re.S)
INLINE = re.compile(r"`(mdmbot [^`]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], set[str]]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        yield path, options - {"--help"}
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


COMMANDS = {(): {"--version"}, **dict(_leaves(build_parser()))}
TOP = {path[0] for path in COMMANDS if path} | {"--version"}


def _blocks(text: str) -> Iterator[str]:
    for indent, body in FENCE.findall(text):
        yield "\n".join(line[len(indent) :] for line in body.splitlines())


def _logical_lines(block: str) -> Iterator[str]:
    """Lines joined at a trailing backslash, and with the indented lines that continue them."""
    current = ""
    for line in block.splitlines():
        if current.endswith("\\"):
            current = current[:-1] + " " + line
        elif line[:1].isspace() and current:
            current += " " + line
        else:
            if current:
                yield current
            current = line
    if current:
        yield current


def _invocations(line: str) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Each `mdmbot COMMAND…` in a shell line: its command path and the options it names."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split("#")[0].split()
    starts = [
        i for i, w in enumerate(words)
        if w.rsplit("/", 1)[-1] == "mdmbot" and i + 1 < len(words) and words[i + 1] in TOP
    ]  # fmt: skip
    for k, start in enumerate(starts):
        end = (starts[k + 1 :] or [len(words)])[0]
        path: tuple[str, ...] = ()
        rest = words[start + 1 : end]
        while rest and any(p[: len(path) + 1] == (*path, rest[0]) for p in COMMANDS):
            path, rest = (*path, rest[0]), rest[1:]
        options = [m.group() for w in rest if (m := OPTION.match(w.lstrip("[(")))]
        yield path, options


def _all_invocations() -> Iterator[tuple[str, tuple[str, ...], list[str]]]:
    for page in PAGES:
        text = page.read_text()
        lines = [line for block in _blocks(text) for line in _logical_lines(block)]
        lines += INLINE.findall(FENCE.sub("", text))
        for line in lines:
            for path, options in _invocations(line):
                yield f"{page.relative_to(ROOT)}: {line.strip()}", path, options


def test_every_command_line_in_the_docs_names_a_command_and_its_real_options() -> None:
    wrong = [
        (where, " ".join(path), sorted(set(options) - COMMANDS.get(path, set())))
        for where, path, options in _all_invocations()
        if path not in COMMANDS or set(options) - COMMANDS[path]
    ]
    assert wrong == []
    assert len(list(_all_invocations())) > 50


def test_the_synopsis_names_every_command_and_every_option() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    synopsis = text.split("## Synopsis", 1)[1]
    named: dict[tuple[str, ...], set[str]] = {}
    for line in _logical_lines(next(_blocks(synopsis))):
        for path, options in _invocations(line):
            named.setdefault(path, set()).update(options)
    assert named == COMMANDS


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme] == []


def test_the_first_screen_says_how_to_run_it_and_test_it() -> None:
    first = (ROOT / "README.md").read_text().split("\n## ", 4)
    assert first[1].startswith("Run it") and first[2].startswith("Run the tests")
    assert "pip install . && mdmbot serve --no-slack" in first[1]
    assert "curl http://127.0.0.1:3000/healthz" in first[1]
    assert "pip install '.[test]' && pytest" in first[2]
    assert "pytest tests/unit tests/integration" in first[2]


def test_env_examples_work_with_docker_env_file() -> None:
    """Docker reads `KEY=VALUE` literally: a comment or quote after a value would be part of it."""
    assignment = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
    examples = [
        block
        for page in PAGES
        for block in _blocks(page.read_text())
        if block.strip()
        and all(assignment.match(x) or x.startswith("#") for x in block.splitlines() if x)
    ]
    assert examples, "the README shows a .env example"
    bad = [
        line
        for block in examples
        for line in block.splitlines()
        if (m := assignment.match(line)) and re.search(r"\s|#|[\"']", m.group(2))
    ]
    assert bad == []
