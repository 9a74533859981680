"""Socket Mode for the fake Slack: single-use tickets and a minimal RFC 6455 WebSocket server.

The server runs on the fake's own port: `GET /link/?ticket=…` with an Upgrade header becomes a
WebSocket (text, ping/pong, close; client frames must be masked). On connect it sends Slack's
`hello`, then pings every `ping_interval` seconds as Slack's servers do (which also lets a
client blocked in recv() notice its own close promptly); the test pushes envelopes and the
client's acknowledgements are recorded by envelope id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from itertools import cycle
from typing import Any
from urllib.parse import parse_qs, urlsplit

JsonDict = dict[str, Any]
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + _GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _xor(data: bytes, mask: bytes) -> bytes:
    """Apply (or remove) a 4-byte WebSocket mask."""
    return bytes(b ^ m for b, m in zip(data, cycle(mask), strict=False))


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; masked when `mask` is given (clients must mask, servers must not)."""
    bit, n = (0x80 if mask else 0), len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    return head + mask + _xor(payload, mask) if mask else head + payload


def _read_exact(rfile: BufferedIOBase, n: int) -> bytes:
    """Read exactly n bytes; raise EOFError when the peer is gone."""
    data = rfile.read(n) if n else b""
    if len(data) != n:
        raise EOFError("connection closed")
    return data


def read_frame(rfile: BufferedIOBase) -> tuple[bool, int, bytes, bool]:
    """Read one frame: (fin, opcode, unmasked payload, whether it was masked)."""
    b1, b2 = _read_exact(rfile, 2)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _read_exact(rfile, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _read_exact(rfile, 8))
    masked = bool(b2 & 0x80)
    mask = _read_exact(rfile, 4) if masked else b""
    payload = _read_exact(rfile, n)
    return bool(b1 & 0x80), b1 & 0x0F, _xor(payload, mask) if masked else payload, masked


class _Link:
    """One open WebSocket connection; writes are serialised."""

    def __init__(self, sock: socket.socket, wfile: BufferedIOBase) -> None:
        """Wrap the upgraded socket."""
        self.sock, self.wfile = sock, wfile
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one unmasked frame."""
        with self._lock:
            self.wfile.write(encode_frame(opcode, payload))

    def send_json(self, message: JsonDict) -> None:
        """Send a JSON text message."""
        self.send(OP_TEXT, json.dumps(message).encode())

    def ping_every(self, interval: float) -> None:
        """Ping the client until the connection ends (run on its own thread)."""
        while not self.closed.wait(interval):
            try:
                self.send(OP_PING, b"fake-slack")
            except OSError:
                return

    def drop(self) -> None:
        """Cut the TCP connection (wakes the reader)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class SocketModeServer:
    """Tickets from apps.connections.open, live connections and the acknowledgements received."""

    def __init__(self, app_id: str = "A0FAKE", ping_interval: float = 0.2) -> None:
        """Start with no tickets or connections."""
        self.app_id, self.ping_interval = app_id, ping_interval
        self.acks: dict[str, JsonDict] = {}
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._links: list[_Link] = []

    def open_url(self, root: str) -> str:
        """Issue a single-use ws:// URL on the fake's host (apps.connections.open)."""
        ticket = str(uuid.uuid4())
        with self._lock:
            self._tickets.add(ticket)
        host = urlsplit(root).netloc
        return f"ws://{host}/link/?ticket={ticket}&app_id={self.app_id}"

    def connected(self) -> bool:
        """Tell whether a client is connected (and was sent hello)."""
        with self._lock:
            return bool(self._links)

    def clear(self) -> None:
        """Forget recorded acknowledgements."""
        with self._lock:
            self.acks.clear()

    def send(self, envelope_type: str, payload: JsonDict, *, accepts_response_payload: bool) -> str:
        """Push an envelope to the newest connection and return its envelope_id."""
        if envelope_type not in ENVELOPE_TYPES:
            raise ValueError(f"envelope type must be one of {ENVELOPE_TYPES}")
        envelope_id = str(uuid.uuid4())
        envelope: JsonDict = {"envelope_id": envelope_id, "type": envelope_type,
                              "payload": payload,
                              "accepts_response_payload": accepts_response_payload}
        if envelope_type == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        with self._lock:
            link = self._links[-1] if self._links else None
        if link is None:
            raise RuntimeError("no Socket Mode client is connected")
        link.send_json(envelope)
        return envelope_id

    def close_all(self) -> None:
        """Say goodbye (close 1001) to every client and cut the connections."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            try:
                link.send(OP_CLOSE, struct.pack("!H", 1001) + b"going away")
            except OSError:
                pass
            link.drop()

    # ----- one connection, on the HTTP handler's thread -----
    def serve(self, h: BaseHTTPRequestHandler) -> None:
        """Upgrade `GET /link/?ticket=…` to a WebSocket and run it until it closes."""
        h.close_connection = True
        problem = self._handshake_problem(h)
        if problem:
            status, reason = problem
            h.wfile.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                          f"Content-Length: {len(reason)}\r\nConnection: close\r\n\r\n"
                          f"{reason}".encode())
            return
        key = str(h.headers["Sec-WebSocket-Key"]).strip()
        h.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n")
                      .encode())
        link = _Link(h.connection, h.wfile)
        with self._lock:
            self._links.append(link)
            count = len(self._links)
        try:
            link.send_json({"type": "hello", "num_connections": count,
                            "debug_info": {"host": "applink-fake", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": self.app_id}})
            threading.Thread(target=link.ping_every, args=(self.ping_interval,),
                             daemon=True).start()
            self._read_loop(h.rfile, link)
        except (OSError, EOFError):
            pass
        finally:
            link.closed.set()
            with self._lock:
                if link in self._links:
                    self._links.remove(link)

    def _handshake_problem(self, h: BaseHTTPRequestHandler) -> tuple[str, str] | None:
        """Return (status, reason) when the upgrade request is not acceptable."""
        tickets = parse_qs(urlsplit(h.path).query).get("ticket", [])
        with self._lock:
            if not tickets or tickets[0] not in self._tickets:
                return "401 Unauthorized", "invalid or used ticket"
            self._tickets.discard(tickets[0])
        upgrade = str(h.headers.get("Upgrade") or "").lower()
        connection = str(h.headers.get("Connection") or "").lower()
        key = str(h.headers.get("Sec-WebSocket-Key") or "")
        if upgrade != "websocket" or "upgrade" not in connection or not key:
            return "400 Bad Request", "not a WebSocket upgrade"
        if str(h.headers.get("Sec-WebSocket-Version") or "") != "13":
            return "426 Upgrade Required", "Sec-WebSocket-Version must be 13"
        return None

    def _read_loop(self, rfile: BufferedIOBase, link: _Link) -> None:
        """Answer pings and closes; record acknowledgements until the client leaves."""
        message, kind = b"", OP_TEXT
        while True:
            fin, opcode, payload, masked = read_frame(rfile)
            if not masked:  # RFC 6455 §5.1: the server must close on unmasked client frames
                link.send(OP_CLOSE, struct.pack("!H", 1002) + b"frames must be masked")
                return
            if opcode == OP_PING:
                link.send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                link.send(OP_CLOSE, payload[:2])
                return
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                if opcode != OP_CONTINUATION:
                    message, kind = b"", opcode
                message += payload
                if fin and kind == OP_TEXT:
                    self._received(message)

    def _received(self, raw: bytes) -> None:
        """Record a client message that acknowledges an envelope."""
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("envelope_id"), str):
            with self._lock:
                self.acks[message["envelope_id"]] = message
