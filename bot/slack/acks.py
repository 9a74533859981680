"""Answer Slack as soon as a listener acks, instead of bolt's 10 ms polling for the ack."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware

ACK_WAIT = 3.0  # Slack: a request not answered within 3 seconds is shown as failed
_pending = threading.local()


class PromptAck(Ack):
    """bolt's `ack`, which also wakes the request thread waiting for it."""

    def __init__(self) -> None:
        self.response = None
        self.called = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        """Record the response as bolt does, then wake the waiting request thread."""
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.called.set()


def expect() -> PromptAck:
    """A new ack for the request this thread is about to dispatch to bolt."""
    ack = PromptAck()
    _pending.ack = ack
    return ack


def forget() -> None:
    """Drop this thread's pending ack (a request answered before any listener ran)."""
    _pending.ack = None
    _pending.inline = False


class AnswerInline(Middleware):
    """Listener middleware for a listener whose work ends with its ack (it hands anything later
    to a pool of its own): it runs on the request's thread, with no hand-off to bolt's pool."""

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        """Mark the request this thread dispatches, then go on to the listener."""
        _pending.inline = True
        next()
        return resp


class AckingExecutor(ThreadPoolExecutor):
    """bolt's listener pool: handing it a listener returns once the listener acked or ended.

    bolt then finds the ack already set and answers at once; the listener's work after its ack
    goes on in the pool. Requests dispatched without `expect` (Socket Mode, lazy listeners) are
    submitted as usual.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn` in the pool (or here, when marked inline); wait for the pending ack."""
        ack: PromptAck | None = getattr(_pending, "ack", None)
        inline = ack is not None and getattr(_pending, "inline", False)
        forget()
        if inline:
            future: Future[Any] = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
            return future
        future = super().submit(fn, *args, **kwargs)
        if ack is not None:
            future.add_done_callback(lambda _: ack.called.set())
            ack.called.wait(ACK_WAIT)
        return future
