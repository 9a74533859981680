"""The repository: nothing binary tracked, no recipe that builds other projects' code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tracked() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_binary_file_is_tracked() -> None:
    binary = [
        str(path.relative_to(ROOT))
        for path in _tracked()
        if path.is_file() and (path.suffix in (".whl", ".zip", ".gz") or b"\0" in path.read_bytes())
    ]
    assert binary == []


def test_no_file_builds_fetched_third_party_code() -> None:
    recipe = re.compile(rb"\bgo (?:build|install|mod download)\b|go[-]bin|build[_]nanodep")
    found = [
        str(path.relative_to(ROOT))
        for path in _tracked()
        if path.is_file() and recipe.search(path.read_bytes())
    ]
    assert found == []
