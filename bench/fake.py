"""The fake Slack Web API of the tests (tests/fakeslack.py), behind the interface bench uses.

It is loaded by name so that type-checking `bench` does not type-check the test suite too.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from bench.common import ADMIN, ALERT_CHANNEL, BOT_TOKEN, TEAM


class FakeSlack(Protocol):
    """What the benchmarks use of tests.fakeslack.FakeSlack."""

    url: str
    root: str

    def start(self) -> FakeSlack:
        """Serve on an ephemeral port."""

    def stop(self) -> None:
        """Stop serving."""

    def add_user(self, user_id: str, name: str, email: str | None = None) -> dict[str, Any]:
        """Register a user for users.info."""

    def add_channel(self, channel_id: str, name: str) -> None:
        """Register a channel."""

    def calls_to(self, method: str) -> Sequence[Any]:
        """Recorded calls to one Web API method."""

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll until predicate() holds."""


def start_fake() -> FakeSlack:
    """A running fake Slack with the benchmark's admin and channels."""
    module = importlib.import_module("tests.fakeslack")
    fake = cast(FakeSlack, module.FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM)).start()
    fake.add_user(ADMIN, "Bench Admin", "admin@school.example")
    fake.add_channel(ALERT_CHANNEL, "mdm-alerts")
    fake.add_channel("C0GENERAL", "general")
    return fake


@contextmanager
def collector_held() -> Iterator[None]:
    """No garbage collection in this process (the fake's) during a round; its record frozen after.

    A full collection of the fake's record of calls took 100-170 ms of one of the two cores, more
    each round, and stalled every request in flight; Slack's servers take no core of mdmbot's host.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
        gc.freeze()
