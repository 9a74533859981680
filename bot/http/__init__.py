"""The HTTP front: each listener serves one WSGI app (Slack, metrics, the DEP service).

One event loop per process holds the connections (`front`, each listener's share in `site`, what
it refuses of a request and how it calls the app in `message`), one process or gunicorn workers
run it (`server`), and `wsgi` has what is served: listeners, their limits and the Slack app.
"""

from bot.http.server import HttpServer, WorkerHooks, serve_workers, start_in_background
from bot.http.wsgi import (
    MAX_BODY,
    VERIFIED,
    Limits,
    Listener,
    SlackWsgi,
    StartResponse,
    WsgiApp,
    check_listeners,
    request_kind,
    signature_ok,
)

__all__ = [
    "MAX_BODY",
    "VERIFIED",
    "HttpServer",
    "Limits",
    "Listener",
    "SlackWsgi",
    "StartResponse",
    "WorkerHooks",
    "WsgiApp",
    "check_listeners",
    "request_kind",
    "serve_workers",
    "signature_ok",
    "start_in_background",
]
