"""One request on its way through the front: what it refuses, the WSGI environ, the app's answer."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import h11

log = logging.getLogger("mdmbot.http")

Answer = tuple[str, list[tuple[str, str]], bytes]
# RFC 9112 5.2: obs-fold is a line of the header section that starts with a space or a tab.
_FOLD = re.compile(rb"\n[ \t]")
_HEADER_END = re.compile(rb"\n\r?\n")


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


def reason(status: int) -> str:
    """The reason phrase of a status the front refuses with (Bad Request for another)."""
    return _REASONS.get(status, "Bad Request")


def may_fold(data: bytes, last: bytes) -> bool:
    """Whether `data`, read after a chunk ending in `last`, could hold a folded header line."""
    return _FOLD.search(data) is not None or (last == b"\n" and data[:1] in (b" ", b"\t"))


def folded(unparsed: bytes) -> bool:
    """Whether the header at the start of `unparsed` (as much of it as is in) folds a line."""
    end = _HEADER_END.search(unparsed)
    return _FOLD.search(unparsed, 0, end.start() + 1 if end else len(unparsed)) is not None


def refusal(request: h11.Request, max_header: int) -> int | None:
    """The status a parsed request header is refused with, or None."""
    size = len(request.method) + len(request.target) + 14  # the request line and the blank line
    size += sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
    if size > max_header:
        return 431
    names = {name for name, _ in request.headers}
    # RFC 9112 6.1: a request with both may be an attempt at request smuggling.
    if b"content-length" in names and b"transfer-encoding" in names:
        return 400
    return None


def environ(
    base: dict[str, Any], peer: tuple[str, int], request: h11.Request, body: bytes
) -> dict[str, Any]:
    """The WSGI environ of a request whose header and body are in."""
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    made = dict(base)
    made.update(
        REQUEST_METHOD=request.method.decode("ascii"),
        PATH_INFO=unquote(path, "latin-1"),
        QUERY_STRING=query,
        SERVER_PROTOCOL="HTTP/" + request.http_version.decode("ascii"),
        REMOTE_ADDR=peer[0],
        REMOTE_PORT=str(peer[1]),
        CONTENT_LENGTH=str(len(body)),
    )
    made["wsgi.input"] = io.BytesIO(body)
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1")
        if "_" in name:  # X_Forwarded_For would pass for X-Forwarded-For (CGI naming)
            continue
        key, value = name.upper().replace("-", "_"), raw_value.decode("latin-1")
        if key == "CONTENT_TYPE":
            made[key] = value
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            made[key] = f"{made[key]},{value}" if key in made else value
    return made


def call_app(app: Any, environ: dict[str, Any]) -> Answer:
    """Run one WSGI request to the end (status, headers, whole body); a failure answers 500."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    try:
        result: Iterable[bytes] = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        log.exception("request failed")
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b""
    if not started:
        log.error("the application answered without a status")
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b""
    return started[0], list(started[1]), b"".join(chunks)


_TITLES: dict[str, str] = {}


def title(name: str) -> str:
    """A header name as waitress and most servers write it (Content-Type), whatever the app sent."""
    titled = _TITLES.get(name)
    if titled is None:
        titled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_TITLES) < 1000:
            _TITLES[name] = titled
    return titled
