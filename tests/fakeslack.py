"""A stateful stand-in for the Slack Web API, served on an ephemeral local port for tests.

Fixtures (users, channels, DMs, private files) survive `reset()`; recorded traffic does not.
Deleted users keep their profile (Slack's users.info still returns it for deactivated accounts).
Socket Mode (apps.connections.open with the app-level token, then a WebSocket on the same port)
is in tests/fakeslack_socket.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from slack_sdk import WebClient

from tests.fakeslack_socket import SocketModeServer

JsonDict = dict[str, Any]
_JSON_FIELDS = {"blocks", "view", "files", "attachments", "metadata"}
_Injection = tuple[str, int, int | None]  # error, HTTP status, Retry-After
_SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


class SlackError(Exception):
    """A Slack Web API error answered as {"ok": false, "error": ...}."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        """Keep the error code and optional response_metadata messages."""
        super().__init__(error)
        self.error, self.messages = error, messages or []


@dataclass
class Call:
    """One recorded Web API call."""

    method: str
    params: JsonDict
    token: str | None
    at: float


def _err(what: str, ptr: str) -> str:
    """Format a Slack response_metadata validation message."""
    return f"[ERROR] {what} [json-pointer:{ptr}]"


def _text_of(obj: Any) -> str:
    """Return the text of a text object (or "" when absent)."""
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _block_problems(blocks: list[Any], where: str) -> list[str]:
    """Return Block Kit limit violations for a list of blocks."""
    out: list[str] = []

    def check(text: str, limit: int, ptr: str) -> None:
        if len(text) > limit:
            out.append(_err(f"must be less than {limit + 1} characters", ptr))

    for i, b in enumerate(blocks):
        p = f"{where}/{i}"
        if not isinstance(b, dict) or "type" not in b:
            out.append(_err("missing required field: type", p))
            continue
        if b["type"] == "section":
            check(_text_of(b.get("text")), 3000, f"{p}/text/text")
            for j, f in enumerate(b.get("fields") or []):
                check(_text_of(f), 2000, f"{p}/fields/{j}/text")
        if b["type"] == "header":
            check(_text_of(b.get("text")), 150, f"{p}/text/text")
        if b["type"] == "context":  # Slack: a context's text element holds at most 2,000
            for j, el in enumerate(b.get("elements") or []):
                if isinstance(el, dict) and el.get("type") in ("mrkdwn", "plain_text"):
                    check(_text_of(el), 2000, f"{p}/elements/{j}/text")
        if b["type"] == "input":  # Slack: label ≤ 2,000, hint ≤ 2,000, placeholder ≤ 150
            if not _text_of(b.get("label")) or not isinstance(b.get("element"), dict):
                out.append(_err("missing required field: label or element", p))
            check(_text_of(b.get("label")), 2000, f"{p}/label/text")
            check(_text_of(b.get("hint")), 2000, f"{p}/hint/text")
            element = b.get("element") or {}
            check(_text_of(element.get("placeholder")), 150, f"{p}/element/placeholder/text")
            if element.get("type") == "number_input" and "is_decimal_allowed" not in element:
                out.append(_err("missing required field: is_decimal_allowed", f"{p}/element"))
        elements = list(b.get("elements") or []) if b["type"] == "actions" else []
        if isinstance(b.get("accessory"), dict):
            elements.append(b["accessory"])
        for j, el in enumerate(elements):
            if isinstance(el, dict) and el.get("type") == "button":
                check(_text_of(el.get("text")), 75, f"{p}/elements/{j}/text/text")
    return out


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the owning FakeSlack."""

    server: _Server
    protocol_version = "HTTP/1.1"  # slack.com keeps a client's connection open between calls
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would hold the body

    def do_POST(self) -> None:
        """Handle POST (and GET, whose body is empty)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.fake._handle(self, body)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def reply(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        """Write a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """HTTP server that knows its FakeSlack and the connections it holds open."""

    daemon_threads = True
    request_queue_size = 1024  # slack.com takes every connection; socketserver's 5 drops SYNs
    fake: FakeSlack

    def server_activate(self) -> None:
        """Listen, with no connection accepted yet."""
        self.accepted = 0
        self.open_connections: set[socket.socket] = set()
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count and remember the connection while its thread serves it."""
        with self.fake._lock:
            self.accepted += 1
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a connection its thread is done with."""
        with self.fake._lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Hang up every open connection, as a Slack outage would."""
        with self.fake._lock:
            held = list(self.open_connections)
        for sock in held:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeSlack:
    """Stateful fake of the Slack Web API (see DESIGN §9)."""

    bot_user_id = "UBOT"
    bot_id = "BBOT"

    def __init__(self, bot_token: str = "xoxb-test-token", team_id: str = "T0001",  # noqa: S107
                 *, app_token: str = "xapp-test") -> None:  # noqa: S107
        """Create an unstarted fake; `app_token` is the app-level token for Socket Mode."""
        self.bot_token, self.team_id, self.app_token = bot_token, team_id, app_token
        self.url = self.root = ""
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._seq = 0
        self._users: dict[str, JsonDict] = {}
        self._channels: dict[str, str] = {}
        self._outside: set[str] = set()
        self._dms: dict[str, str] = {}
        self._files: dict[str, JsonDict] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._socket = SocketModeServer()
        self._clear()

    def _clear(self) -> None:
        """Drop recorded traffic and injections."""
        self.calls: list[Call] = []
        self.reply_delay: dict[str, float] = {}
        self.messages: list[JsonDict] = []
        self.views: dict[str, JsonDict] = {}
        self.published_home: dict[str, JsonDict] = {}
        self.uploads: list[JsonDict] = []
        self.responses: list[JsonDict] = []
        self._pending: dict[str, JsonDict] = {}
        self._inject: dict[str, deque[_Injection]] = {}
        self._socket.clear()

    # ----- lifecycle and fixtures -----
    def start(self) -> FakeSlack:
        """Bind 127.0.0.1 on an ephemeral port and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self.url = self.root + "api/"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving (Socket Mode clients are sent a close frame first)."""
        self._socket.close_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since start (a kept-alive client opens one for many calls)."""
        return self._server.accepted if self._server is not None else 0

    def hang_up(self) -> None:
        """Close every open client connection and keep serving (an idle timeout at Slack)."""
        if self._server is not None:
            self._server.drop_connections()

    def reset(self) -> None:
        """Forget recorded traffic, views, uploads and injections; keep fixtures."""
        with self._lock:
            self._clear()

    def _next_id(self, prefix: str) -> str:
        """Return a fresh Slack-style id."""
        with self._lock:
            self._seq += 1
            return f"{prefix}{self._seq:08d}"

    def _next_ts(self) -> str:
        """Return a unique, increasing message ts."""
        with self._lock:
            self._seq += 1
            micros = 100 * self._seq
            return f"{1700000000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def add_user(self, user_id: str, name: str, email: str | None = None, *,
                 deleted: bool = False, is_bot: bool = False) -> JsonDict:
        """Register a user that users.info will return (email omitted from profile if None)."""
        profile: JsonDict = {"real_name": name, "display_name": name,
                             "real_name_normalized": name, "display_name_normalized": name}
        if email is not None:
            profile["email"] = email
        user: JsonDict = {"id": user_id, "team_id": self.team_id, "name": name.lower(),
                          "deleted": deleted, "real_name": name, "is_bot": is_bot,
                          "is_admin": False, "tz": "Europe/London", "profile": profile}
        with self._lock:
            self._users[user_id] = user
        return user

    def set_user_deleted(self, user_id: str, deleted: bool) -> None:
        """Mark a user deactivated (or back); the profile is kept as Slack does."""
        with self._lock:
            self._users[user_id]["deleted"] = deleted

    def add_channel(self, channel_id: str, name: str, *, member: bool = True) -> None:
        """Register a channel id (e.g. C…); the bot posts there only as a member."""
        with self._lock:
            self._channels[channel_id] = name
            if member:
                self._outside.discard(channel_id)
            else:
                self._outside.add(channel_id)

    def dm_channel_for(self, user_id: str) -> str:
        """Return the stable D… id conversations.open gives for this user."""
        with self._lock:
            if user_id not in self._dms:
                self._dms[user_id] = self._next_id("D")
            return self._dms[user_id]

    def _known_channel(self, channel: str) -> bool:
        """Tell whether a channel id exists."""
        return channel in self._channels or channel in self._dms.values()

    def _file_object(self, fid: str, name: str, title: str, size: int,
                     mimetype: str, filetype: str, user: str) -> JsonDict:
        """Build a Slack file object with private URLs on this host."""
        base = f"{self.root}files-pri/{self.team_id}-{fid}"
        now = int(time.time())
        return {"id": fid, "created": now, "timestamp": now, "name": name, "title": title,
                "mimetype": mimetype, "filetype": filetype, "pretty_type": filetype,
                "user": user, "size": size, "mode": "hosted", "is_external": False,
                "is_public": False, "public_url_shared": False,
                "url_private": f"{base}/{quote(name)}",
                "url_private_download": f"{base}/download/{quote(name)}",
                "permalink": f"{self.root}files/{user}/{fid}/{quote(name)}",
                "channels": [], "groups": [], "ims": [], "shares": {}}

    def add_private_file(self, content: bytes, *, name: str, filetype: str = "text",
                         mimetype: str = "application/octet-stream",
                         user: str = "U0UPLOADER") -> JsonDict:
        """Register a private file (as a file_input upload would create) and return it."""
        fid = self._next_id("F")
        obj = self._file_object(fid, name, name, len(content), mimetype, filetype, user)
        with self._lock:
            self._files[fid], self._file_bytes[fid] = obj, content
        return obj

    # ----- injection and inspection -----
    def fail_next(self, method: str, *, error: str = "internal_error", status: int = 200,
                  times: int = 1) -> None:
        """Make the next `times` calls to `method` fail with `error` and HTTP `status`."""
        with self._lock:
            q = self._inject.setdefault(method, deque())
            q.extend([(error, status, None)] * times)

    def rate_limit_next(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """Make the next `times` calls to `method` answer 429 with Retry-After."""
        with self._lock:
            q = self._inject.setdefault(method, deque())
            q.extend([("ratelimited", 429, retry_after)] * times)

    def response_url(self, key: str = "1") -> str:
        """A slash command `response_url` on the fake; what is POSTed there lands in `responses`."""
        return f"{self.root}commands/{self.team_id}/{key}/hook"

    def calls_to(self, method: str) -> list[Call]:
        """Return recorded calls to one method."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def messages_in(self, channel: str) -> list[JsonDict]:
        """Return messages (including ephemeral ones) posted in a channel."""
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel]

    # ----- Socket Mode -----
    @property
    def socket_acks(self) -> dict[str, JsonDict]:
        """Acknowledgements the Socket Mode client sent, by envelope_id (with any payload)."""
        return self._socket.acks

    def socket_connected(self) -> bool:
        """Tell whether a Socket Mode client is connected."""
        return self._socket.connected()

    def socket_send(self, envelope_type: str, payload: JsonDict, *,
                    accepts_response_payload: bool = True) -> str:
        """Push a slash_commands, interactive or events_api envelope; return its envelope_id."""
        return self._socket.send(envelope_type, payload,
                                 accepts_response_payload=accepts_response_payload)

    def socket_ack(self, envelope_id: str, timeout: float = 3.0) -> JsonDict:
        """Wait for the client's acknowledgement of an envelope and return it."""
        self.wait_for(lambda: envelope_id in self._socket.acks, timeout)
        return self._socket.acks[envelope_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll until predicate() is true; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(0.02)

    # ----- HTTP plumbing -----
    def _handle(self, h: _Handler, body: bytes) -> None:
        """Dispatch one HTTP request."""
        url = urlsplit(h.path)
        path = url.path
        if path.startswith("/upload/") and h.command == "POST":
            status, text = self._receive_upload(path[len("/upload/"):], h, body)
            return h.reply(status, text.encode(), "text/plain; charset=utf-8", {})
        if path.startswith("/files-pri/"):
            return self._download(h, path)
        if path == "/link/" and h.command == "GET":
            return self._socket.serve(h)
        if path.startswith("/commands/") and h.command == "POST":
            with self._lock:
                self.responses.append({"url": path, **json.loads(body or b"{}")})
            return h.reply(200, b"ok", "text/plain", {})
        if not path.startswith("/api/"):
            return h.reply(404, b"Not Found", "text/plain", {})
        params: JsonDict = dict(parse_qsl(url.query))
        ctype = h.headers.get("Content-Type") or ""
        if "application/json" in ctype and body:
            params.update(json.loads(body))
        elif body:
            params.update(parse_qsl(body.decode()))
        for k in _JSON_FIELDS & params.keys():
            if isinstance(params[k], str) and params[k][:1] in "[{":
                params[k] = json.loads(params[k])
        auth = h.headers.get("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else params.pop("token", None)
        params.pop("token", None)
        method = path[len("/api/"):]
        status, payload, headers = self._api(method, params, token)
        if method in self.reply_delay:  # done, but slow to answer (set by tests)
            time.sleep(self.reply_delay[method])
        h.reply(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _api(self, method: str, params: JsonDict, token: str | None,
             ) -> tuple[int, JsonDict, dict[str, str]]:
        """Record, authenticate, inject and run one API call."""
        with self._lock:
            self.calls.append(Call(method, params, token, time.time()))
            refusal = self._auth_error(method, token)
            if refusal:
                return 200, {"ok": False, "error": refusal}, {}
            q = self._inject.get(method)
            if q:
                error, status, retry_after = q.popleft()
                extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                return status, {"ok": False, "error": error}, extra
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return 404, {"ok": False, "error": "unknown_method"}, {}
            try:
                result: JsonDict = handler(params)
            except SlackError as err:
                out: JsonDict = {"ok": False, "error": err.error}
                if err.messages:
                    out["response_metadata"] = {"messages": err.messages}
                return 200, out, {}
            return 200, {"ok": True, **result}, {}

    def _auth_error(self, method: str, token: str | None) -> str | None:
        """Slack's error for a missing, wrong or wrong-kind token (app-level vs bot)."""
        if not token:
            return "not_authed"
        wanted, other = ((self.app_token, self.bot_token) if method == "apps.connections.open"
                         else (self.bot_token, self.app_token))
        if token == other:
            return "not_allowed_token_type"
        return None if token == wanted else "invalid_auth"

    def _receive_upload(self, fid: str, h: _Handler, body: bytes) -> tuple[int, str]:
        """Accept the raw bytes POSTed to an upload URL, no auth needed."""
        with self._lock:
            pending = self._pending.get(fid)
            if pending is None:
                return 404, "Not Found"
            if len(body) != pending["length"]:
                return 400, f"length mismatch: declared {pending['length']}, got {len(body)}"
            pending["data"] = body
        return 200, f"OK - {len(body)}"

    def _download(self, h: _Handler, path: str) -> None:
        """Serve a private file with the bot token, or the HTML sign-in page without it."""
        fid = path.split("/")[2].split("-", 1)[-1]
        with self._lock:
            data = self._file_bytes.get(fid)
            mimetype = self._files.get(fid, {}).get("mimetype", "application/octet-stream")
        if h.headers.get("Authorization") != f"Bearer {self.bot_token}" or data is None:
            return h.reply(200, _SIGN_IN_PAGE, "text/html; charset=utf-8", {})
        h.reply(200, data, mimetype, {})

    # ----- methods -----
    @staticmethod
    def _need(params: JsonDict, *names: str) -> None:
        """Raise invalid_arguments unless every named argument is present."""
        for n in names:
            if params.get(n) in (None, ""):
                raise SlackError("invalid_arguments", [f"[ERROR] missing required field: {n}"])

    def _m_auth_test(self, params: JsonDict) -> JsonDict:
        """auth.test."""
        return {"url": self.root, "team": "Fake Team", "user": "mdmbot",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _m_apps_connections_open(self, params: JsonDict) -> JsonDict:
        """apps.connections.open: a single-use WebSocket URL on this host."""
        return {"url": self._socket.open_url(self.root)}

    def _m_conversations_open(self, params: JsonDict) -> JsonDict:
        """conversations.open for exactly one user (multi-person DMs are not faked)."""
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > 1 or users[0] not in self._users:
            raise SlackError("user_not_found")
        existed = users[0] in self._dms
        cid = self.dm_channel_for(users[0])
        extra = {"no_op": True, "already_open": True} if existed else {}
        return {"channel": {"id": cid}, **extra}

    def _message_body(self, params: JsonDict, *, required: bool = True) -> None:
        """Validate text/blocks of a message against Slack's limits."""
        text, blocks = params.get("text"), params.get("blocks")
        if required and not text and not blocks and not params.get("attachments"):
            raise SlackError("no_text")
        if text is not None and len(str(text)) > 40000:
            raise SlackError("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise SlackError("invalid_blocks_format")
            problems = _block_problems(blocks, "/blocks")
            if len(blocks) > 50:
                problems.insert(0, _err("no more than 50 items allowed", "/blocks"))
            if problems:
                raise SlackError("invalid_blocks", problems)

    def _channel_of(self, params: JsonDict) -> str:
        """Resolve the target channel (a user id means the bot's DM with that user)."""
        channel = str(params.get("channel") or "")
        if channel in self._users:
            channel = self.dm_channel_for(channel)
        if not self._known_channel(channel):
            raise SlackError("channel_not_found")
        return channel

    def _api_message(self, m: JsonDict) -> JsonDict:
        """Render a stored message as the Web API returns it."""
        out: JsonDict = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id,
                         "team": self.team_id, "ts": m["ts"], "text": m["text"]}
        for k in ("blocks", "thread_ts", "files"):
            if m.get(k):
                out[k] = m[k]
        return out

    def _store(self, channel: str, params: JsonDict, *, user: str | None = None,
               files: list[JsonDict] | None = None) -> JsonDict:
        """Record a posted message and return it."""
        m: JsonDict = {"channel": channel, "ts": self._next_ts(),
                       "text": params.get("text") or "", "blocks": params.get("blocks"),
                       "user": user, "thread_ts": params.get("thread_ts"),
                       "ephemeral": user is not None, "files": files or [], "history": []}
        self.messages.append(m)
        return m

    def _m_chat_postMessage(self, params: JsonDict) -> JsonDict:
        """chat.postMessage (thread_ts: a reply; reply_broadcast: also shown in the channel)."""
        channel = self._channel_of(params)
        if channel in self._outside:
            raise SlackError("not_in_channel")
        self._message_body(params)
        m = self._store(channel, params)
        m["reply_broadcast"] = bool(params.get("thread_ts")) and str(
            params.get("reply_broadcast", "")).lower() in ("true", "1")
        return {"channel": channel, "ts": m["ts"], "message": self._api_message(m)}

    def _m_chat_getPermalink(self, params: JsonDict) -> JsonDict:
        """chat.getPermalink for a posted message (message_not_found otherwise)."""
        channel, ts = str(params.get("channel", "")), str(params.get("message_ts", ""))
        if not any(m["channel"] == channel and m["ts"] == ts for m in self.messages):
            raise SlackError("message_not_found")
        link = f"https://fake.slack.test/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": link}

    def _m_conversations_info(self, params: JsonDict) -> JsonDict:
        """conversations.info for a registered channel, with the bot's is_member."""
        channel = str(params.get("channel") or "")
        if channel not in self._channels:
            raise SlackError("channel_not_found")
        return {"channel": {"id": channel, "name": self._channels[channel], "is_channel": True,
                            "is_private": False, "is_archived": False,
                            "is_member": channel not in self._outside}}

    def _m_chat_postEphemeral(self, params: JsonDict) -> JsonDict:
        """chat.postEphemeral (the target user is not checked for membership)."""
        channel = self._channel_of(params)
        self._need(params, "user")
        self._message_body(params)
        return {"message_ts": self._store(channel, params, user=str(params["user"]))["ts"]}

    def _m_chat_update(self, params: JsonDict) -> JsonDict:
        """chat.update: omitted blocks keep the previous ones, as in Slack."""
        channel = self._channel_of(params)
        self._message_body(params)
        found = [m for m in self.messages if m["channel"] == channel
                 and m["ts"] == params.get("ts") and not m["ephemeral"]]
        if not found:
            raise SlackError("message_not_found")
        m = found[0]
        m["history"].append({"text": m["text"], "blocks": m["blocks"]})
        m["text"] = params.get("text") or ""
        if "blocks" in params:
            m["blocks"] = params["blocks"]
        return {"channel": channel, "ts": m["ts"], "text": m["text"],
                "message": self._api_message(m)}

    def _check_view(self, view: Any, kinds: tuple[str, ...]) -> JsonDict:
        """Validate a view payload against Slack's limits."""
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict) or view.get("type") not in kinds:
            raise SlackError("invalid_arguments", [_err("invalid view type", "/view/type")])
        problems: list[str] = []
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            problem = _err("missing required field: blocks", "/view/blocks")
            raise SlackError("invalid_arguments", [problem])
        if view["type"] == "modal" and not _text_of(view.get("title")):
            problems.append(_err("missing required field: title", "/view/title"))
        for key in ("title", "submit", "close"):
            if len(_text_of(view.get(key))) > 24:
                problems.append(_err("must be less than 25 characters", f"/view/{key}/text"))
        if len(blocks) > 100:
            problems.append(_err("no more than 100 items allowed", "/view/blocks"))
        if len(str(view.get("private_metadata") or "")) > 3000:
            problems.append(_err("must be less than 3001 characters", "/view/private_metadata"))
        if len(str(view.get("callback_id") or "")) > 255:
            problems.append(_err("must be less than 256 characters", "/view/callback_id"))
        if view["type"] == "modal" and "submit" not in view and any(
                isinstance(b, dict) and b.get("type") == "input" for b in blocks):
            problems.append(_err("submit is required with input blocks", "/view/submit"))
        problems += _block_problems(blocks, "/view/blocks")
        if problems:
            raise SlackError("invalid_arguments", problems)
        return view

    def _store_view(self, view: JsonDict, *, vid: str | None = None,
                    root: str | None = None, previous: str | None = None) -> JsonDict:
        """Store a view under its id with a fresh hash and return it."""
        vid = vid or self._next_id("V")
        stored: JsonDict = {"private_metadata": "", "callback_id": "", "external_id": "",
                            "clear_on_close": False, "notify_on_close": False, **view,
                            "id": vid, "team_id": self.team_id, "state": {"values": {}},
                            "hash": hashlib.sha1(f"{vid}{time.time_ns()}".encode(),
                                                 usedforsecurity=False).hexdigest()[:20],
                            "root_view_id": root or vid, "previous_view_id": previous,
                            "app_id": "A0FAKE", "bot_id": self.bot_id}
        self.views[vid] = stored
        return stored

    def _m_views_open(self, params: JsonDict) -> JsonDict:
        """views.open."""
        self._need(params, "trigger_id", "view")
        return {"view": self._store_view(self._check_view(params["view"], ("modal",)))}

    _m_views_push = _m_views_open

    def _m_views_update(self, params: JsonDict) -> JsonDict:
        """views.update by view_id or external_id, honouring hash."""
        self._need(params, "view")
        view = self._check_view(params["view"], ("modal", "home"))
        vid = params.get("view_id") or next(
            (k for k, v in self.views.items()
             if params.get("external_id") and v.get("external_id") == params["external_id"]), None)
        if not vid or vid not in self.views:
            raise SlackError("not_found")
        old = self.views[vid]
        if params.get("hash") and params["hash"] != old["hash"]:
            raise SlackError("hash_conflict")
        return {"view": self._store_view(view, vid=vid, root=old["root_view_id"],
                                         previous=old["previous_view_id"])}

    def _m_views_publish(self, params: JsonDict) -> JsonDict:
        """views.publish (home tab) for a known user."""
        self._need(params, "user_id", "view")
        if params["user_id"] not in self._users:
            raise SlackError("user_not_found")
        view = self._check_view(params["view"], ("home",))
        old = self.published_home.get(params["user_id"])
        if old and params.get("hash") and params["hash"] != old["hash"]:
            raise SlackError("hash_conflict")
        stored = self._store_view(view, vid=old["id"] if old else None)
        self.published_home[params["user_id"]] = stored
        return {"view": stored}

    def _m_users_info(self, params: JsonDict) -> JsonDict:
        """users.info."""
        user = self._users.get(str(params.get("user") or ""))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": json.loads(json.dumps(user))}

    def _m_files_info(self, params: JsonDict) -> JsonDict:
        """files.info."""
        f = self._files.get(str(params.get("file") or ""))
        if f is None:
            raise SlackError("file_not_found")
        return {"file": f, "comments": [], "response_metadata": {"next_cursor": ""}}

    def _m_files_list(self, params: JsonDict) -> JsonDict:
        """files.list: filtered by channel, user and ts_from, newest first."""
        channel, user = params.get("channel"), params.get("user")
        since = int(params.get("ts_from") or 0)
        found = [
            f
            for f in self._files.values()
            if (not channel or channel in f["channels"] + f["ims"] + f["groups"])
            and (not user or f["user"] == user)
            and f["created"] >= since
        ]
        found.sort(key=lambda f: f["created"], reverse=True)
        paging = {"count": 100, "total": len(found), "page": 1, "pages": 1}
        return {"files": found, "paging": paging}

    def _m_files_getUploadURLExternal(self, params: JsonDict) -> JsonDict:
        """files.getUploadURLExternal."""
        self._need(params, "filename", "length")
        try:
            length = int(params["length"])
        except ValueError:
            raise SlackError("invalid_arguments", ["[ERROR] length must be an integer"]) from None
        fid = self._next_id("F")
        self._pending[fid] = {"filename": str(params["filename"]), "length": length, "data": None}
        return {"upload_url": f"{self.root}upload/{fid}", "file_id": fid}

    def _m_files_completeUploadExternal(self, params: JsonDict) -> JsonDict:
        """files.completeUploadExternal: share uploaded files in channel_id/channels."""
        self._need(params, "files")
        items = params["files"]
        if not isinstance(items, list) or not items:
            raise SlackError("invalid_arguments", ["[ERROR] files must be a non-empty array"])
        targets = [c for c in [params.get("channel_id"), *str(params.get("channels") or "")
                               .split(",")] if c]
        for c in targets:
            if not self._known_channel(str(c)):
                raise SlackError("channel_not_found")
        if any(self._pending.get(str(i.get("id")), {}).get("data") is None for i in items):
            raise SlackError("file_not_found")
        shared: list[JsonDict] = []
        for item in items:
            pend = self._pending.pop(str(item["id"]))
            name = pend["filename"]
            title = item.get("title") or name
            fobj = self._file_object(str(item["id"]), name, title, len(pend["data"]),
                                     "application/octet-stream", "binary", self.bot_user_id)
            for c in targets:
                fobj["ims" if c.startswith("D") else "channels"].append(c)
            self._files[fobj["id"]], self._file_bytes[fobj["id"]] = fobj, pend["data"]
            shared.append(fobj)
            self.uploads += [{"file_id": fobj["id"], "filename": name, "title": title,
                              "bytes": pend["data"], "channel_id": c,
                              "initial_comment": params.get("initial_comment"),
                              "thread_ts": params.get("thread_ts")} for c in targets or [None]]
        for c in targets:
            self._store(c, {"text": params.get("initial_comment") or "",
                            "thread_ts": params.get("thread_ts")}, files=shared)
        return {"files": shared}


def make_client(fake: FakeSlack) -> WebClient:
    """Return a WebClient pointed at the fake, holding the bot token."""
    return WebClient(token=fake.bot_token, base_url=fake.url)
