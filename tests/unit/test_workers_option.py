"""`--workers`: how many processes `mdmbot serve` runs, and what it refuses."""

from __future__ import annotations

import os

import pytest

from bot.serve import worker_count
from core.errors import ConfigError


def test_auto_is_one_per_core_over_http_and_one_in_socket_mode() -> None:
    assert worker_count("auto", http=True) == len(os.sched_getaffinity(0))
    assert worker_count("AUTO", http=False) == 1
    assert worker_count("3", http=True) == 3
    assert worker_count("1", http=False) == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "", "1.5"])
def test_anything_but_a_positive_count_or_auto_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="--workers must be a whole number of 1 or more"):
        worker_count(value, http=True)


def test_several_workers_are_refused_in_socket_mode() -> None:
    with pytest.raises(ConfigError, match="--workers is for HTTP mode"):
        worker_count("2", http=False)
