"""Stopping on SIGTERM or SIGINT, however many arrive and however close together."""

from __future__ import annotations

import signal
import time
from types import FrameType


class StopSignals:
    """Notes SIGTERM and SIGINT once installed (from the main thread); `wait` returns on one.

    Python runs a handler between any two bytecodes of the main thread, the handler's own
    included: a handler that called `threading.Event.set` was entered again by the next signal
    while it held the event's lock, and waited on itself for ever (systemd signals every process
    of the service, mdmbot's first process signals its servers, and Linux signals a child whose
    parent died). This one only sets a flag.
    """

    def __init__(self, poll: float = 0.1) -> None:
        self.requested = False
        self.poll = poll
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a stop signal: True once one came, False when `timeout` seconds passed."""
        ends = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            left = self.poll if ends is None else min(self.poll, ends - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True
