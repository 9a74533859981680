"""The package layout's rules: who may import whom, module sizes, the process modules' count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("bot.slack", "bot.cli", "bot.dep", "bot.mdm", "bot.asm", "bot.apple")
# core's domains, lowest first: each imports the foundation (core's root) and the domains before
# it, never one after it (docs/architecture.md).
DOMAINS = (
    "core.people", "core.tokens", "core.devices", "core.dep", "core.connections", "core.asm",
    "core.apple", "core.backup",
)
FOUNDATION = ("core.settings", "core.db", "core.models", "core.errors", "core.files", "core.audit",
              "core.lease", "core.inbox", "core.sealing", "core.vault",
              "core.roles", "core.progress")


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


def _domain(name: str) -> str | None:
    return next((d for d in DOMAINS if _within(name, d)), None)


def test_the_foundation_imports_no_domain() -> None:
    offenders = {
        _module(p): sorted(i for i in _imports(p) if _domain(i))
        for p in _sources("core")
        if _module(p).removesuffix(".__init__") in FOUNDATION
    }
    assert {m: i for m, i in offenders.items() if i} == {}


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_imports_only_the_domains_below_it(domain: str) -> None:
    above = DOMAINS[DOMAINS.index(domain) + 1 :]
    offenders = {
        _module(p): sorted(i for i in _imports(p) for a in above if _within(i, a))
        for p in _sources(domain.replace(".", "/"))
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_every_core_module_is_in_the_foundation_or_a_domain() -> None:
    loose = [
        m
        for p in _sources("core")
        if not _within(m := _module(p).removesuffix(".__init__"), "core.migrations")
        and m != "core"
        and m not in FOUNDATION
        and _domain(m) is None
    ]
    assert loose == []


def test_modules_stay_small_and_folders_stay_short() -> None:
    sizes = {
        _module(p): len(p.read_text().splitlines()) for p in _sources("bot") + _sources("core")
    }
    assert {m: n for m, n in sizes.items() if n > 400 and ".migrations." not in m} == {}
    folders = {p.parent for p in _sources("bot") + _sources("core")}
    crowded = {
        str(f.relative_to(ROOT)): n
        for f in folders
        if (n := len([m for m in f.glob("*.py") if m.name != "__init__.py"])) > 12
        and f.name != "versions"
    }
    assert crowded == {}
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
