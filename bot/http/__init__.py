"""The HTTP front: each listener serves one WSGI app (Slack, metrics, the DEP service).

granian holds the connections: each listener on granian servers of its own (`server`), behind
what the front refuses and the body deadline (`guard`); `wsgi` has what is served: listeners,
their limits and the Slack app; `signals` stops a process on SIGTERM however many arrive.
"""

from bot.http.server import HttpServer, WorkerHooks, serve_processes, start_in_background
from bot.http.signals import StopSignals
from bot.http.wsgi import (
    MAX_BODY,
    VERIFIED,
    Limits,
    Listener,
    SlackWsgi,
    StartResponse,
    WsgiApp,
    check_listeners,
    every_request,
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
    "StopSignals",
    "WorkerHooks",
    "WsgiApp",
    "check_listeners",
    "every_request",
    "request_kind",
    "serve_processes",
    "signature_ok",
    "start_in_background",
]
