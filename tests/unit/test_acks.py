"""A Slack request is answered as soon as its listener acks; the work after the ack goes on."""

from __future__ import annotations

import threading
import time

from slack_bolt import App, BoltRequest
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack import Ack

from bot.slack import acks

COMMAND = (
    "command=%2Fslow&text=&user_id=U1&team_id=T1&channel_id=C1"
    "&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr&trigger_id=1.2"
)


def _app() -> tuple[App, threading.Event, list[str]]:
    app = App(
        authorize=lambda **_: AuthorizeResult(enterprise_id=None, team_id="T1", bot_token="xoxb"),
        signing_secret="unused",
        request_verification_enabled=False,
        token_verification_enabled=False,
        listener_executor=acks.AckingExecutor(max_workers=4),
    )
    finished = threading.Event()
    threads: list[str] = []

    @app.command("/slow")
    def slow(ack: Ack) -> None:
        threads.append(threading.current_thread().name)
        ack(text="on it")
        time.sleep(0.5)
        finished.set()

    @app.command("/inline", middleware=[acks.AnswerInline()])
    def inline(ack: Ack) -> None:
        threads.append(threading.current_thread().name)
        ack(text="done")

    return app, finished, threads


def _dispatch(app: App, body: str) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        response = app.dispatch(
            BoltRequest(
                body=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
                context={"ack": acks.expect()},
            )
        )
    finally:
        acks.forget()
    return response.body, time.perf_counter() - started


def test_the_answer_leaves_at_the_ack_and_the_work_after_it_goes_on() -> None:
    app, finished, threads = _app()
    body, took = _dispatch(app, COMMAND)
    assert body == "on it"
    assert took < 0.3
    assert not finished.is_set()
    assert finished.wait(5)
    assert threads != [threading.current_thread().name]


def test_an_inline_listener_runs_on_the_request_thread() -> None:
    app, _, threads = _app()
    body, _ = _dispatch(app, COMMAND.replace("%2Fslow", "%2Finline"))
    assert body == "done"
    assert threads == [threading.current_thread().name]


def test_without_a_pending_ack_the_pool_runs_as_bolt_expects() -> None:
    app, finished, threads = _app()
    response = app.dispatch(
        BoltRequest(body=COMMAND, headers={"content-type": "application/x-www-form-urlencoded"})
    )
    assert response.body == "on it"
    assert finished.wait(5)
    assert threads != [threading.current_thread().name]
