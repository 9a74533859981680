"""The package layout's rules: who may import whom, module sizes, the process modules' count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("bot.slack", "bot.cli", "bot.dep")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_core_never_imports_bot() -> None:
    offenders = {
        _module(p): sorted(i for i in _imports(p) if _within(i, "bot")) for p in _sources("core")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_adapter_never_imports_another(adapter: str) -> None:
    others = [a for a in ADAPTERS if a != adapter]
    offenders = {
        _module(p): sorted(i for i in _imports(p) for o in others if _within(i, o))
        for p in _sources(adapter.replace(".", "/"))
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_modules_stay_small_and_the_process_package_stays_short() -> None:
    sizes = {
        _module(p): len(p.read_text().splitlines()) for p in _sources("bot") + _sources("core")
    }
    assert {m: n for m, n in sizes.items() if n > 400 and ".migrations." not in m} == {}
    assert len(list((ROOT / "bot").glob("*.py"))) <= 8


def _reaches_outside(path: Path) -> list[str]:
    """What in a test file points above the repository: `../shared`, `shared`, deep `parents[n]`."""
    text = path.read_text()
    found = re.findall(r"\.\./+shared|shared/fixtures|/\s*\"shared\"|\"shared\"\s*/", text)
    for depth in re.findall(r"parents\[(\d+)\]", text):
        if not path.resolve().parents[int(depth)].is_relative_to(ROOT):
            found.append(f"parents[{depth}]")
    return found


def test_no_test_reads_outside_the_repository() -> None:
    files = [p for p in _sources("tests") + _sources("bench") if p != Path(__file__).resolve()]
    offenders = {_module(p): hits for p in files if (hits := _reaches_outside(p))}
    assert offenders == {}
