"""The device assignment service as a Falcon WSGI app, served at the host root on its own port."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from bot import metrics
from bot.context import AppContext
from bot.dep import devices
from bot.dep.middleware import (
    DepMiddleware,
    render_dep_error,
    render_http_error,
    render_unexpected,
)
from bot.dep.resources import AccountResource, SessionResource, log_replaced
from core import db
from core.dep import feedback as dep_feedback
from core.dep.auth import DepError
from core.dep.feedback import ReplacedTokenAlert


def build_dep_app(
    ctx: AppContext,
    *,
    on_replaced: Callable[[ReplacedTokenAlert], None] = log_replaced,
    on_cases: Callable[[tuple[int, ...]], None] = lambda cases: None,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app; `on_replaced` tells the alert channel, `on_cases` refreshes checklists."""
    app = falcon.App(middleware=[DepMiddleware()], media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    writes = db.writer_turns(ctx.engine)
    app.add_route("/session", SessionResource(ctx, writes, on_replaced, on_cases))
    app.add_route("/account", AccountResource(ctx, writes))
    devices.add_routes(app, ctx, writes)
    app.add_error_handler(Exception, render_unexpected)
    app.add_error_handler(falcon.HTTPError, render_http_error)
    app.add_error_handler(DepError, render_dep_error)

    def counts() -> dict[str, int]:
        with ctx.unit_of_work(readonly=True) as session:
            return dep_feedback.install_counts(session)

    metrics.watch_installs(counts)
    return app
