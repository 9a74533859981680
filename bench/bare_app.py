"""The baseline: a bare bolt App that only acks `/mdm`, on mdmbot's own HTTP front.

`python -m bench.bare_app --port N [--workers W --threads T]` serves it with the same front as
`mdmbot serve --http` (a granian server of W worker processes, `serve_processes`) and
`SlackWsgi`, the same signing secret check and the same Web API client settings
(SLACK_API_URL, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET from the environment).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.http import Listener, SlackWsgi, WorkerHooks, serve_processes


def build_bare_app() -> App:
    """A bolt App whose only listener acks `/mdm`."""
    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = App(
        client=client,
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        name="bare",
        logger=logging.getLogger("bare.bolt"),
    )

    @app.command("/mdm")
    def on_mdm(ack: Ack) -> None:
        ack()

    return app


def health() -> dict[str, Any]:
    """Always healthy."""
    return {"status": "ok"}


def main() -> int:
    """Serve the bare app until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    secret = os.environ["SLACK_SIGNING_SECRET"]
    slack = SlackWsgi(build_bare_app(), health, signing_secret=secret)
    listeners = [Listener("slack", args.host, args.port, slack)]
    return serve_processes(listeners, args.workers, args.threads, WorkerHooks(stop=lambda: None))


if __name__ == "__main__":
    raise SystemExit(main())
