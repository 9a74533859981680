"""Downloading an uploaded certificate from Slack: redirects, slow servers, the 3-second budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.slack.download import next_hop
from bot.slack.gateway import SlackGateway, make_client
from core.errors import CertificateError
from tests import certs

TOKEN = "xoxb-test-token"
PEM = certs.self_signed_rsa().pem


@dataclass
class Site:
    """A local HTTP server; `routes` maps a path to a handler, `seen` records each request."""

    server: ThreadingHTTPServer
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _serve(routes: dict[str, object]) -> Site:
    site: Site

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.seen.append((self.path, self.headers.get("Authorization")))
            action = routes.get(self.path)
            if isinstance(action, bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(action)))
                self.end_headers()
                self.wfile.write(action)
            elif action == "drip":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PEM)))
                self.end_headers()
                try:
                    for byte in PEM:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    return  # the client hung up, as it should
            elif isinstance(action, str):
                self.send_response(302)
                self.send_header("Location", action.replace("ROOT", site.root))
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    site = Site(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    site.server.daemon_threads = True
    site.server.block_on_close = False  # the drip handler outlives its test
    threading.Thread(target=site.server.serve_forever, daemon=True).start()
    return site


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """The Slack API host (trusted) with its files, and a foreign host."""
    foreign = _serve({"/steal": PEM})
    slack = _serve(
        {
            "/files/cert.pem": PEM,
            "/files/moved": "ROOT/files/cert.pem",
            "/files/away": f"{foreign.root}/steal",
            "/files/loop": "ROOT/files/loop",
            "/files/drip": "drip",
        }
    )
    yield slack, foreign
    for site in (slack, foreign):
        site.server.shutdown()
        site.server.server_close()


def _gateway(slack: Site) -> SlackGateway:
    api = f"{slack.root}/api/"
    return SlackGateway(make_client(TOKEN, api), api, metadata_key=b"k" * 32)


def _file(slack: Site, path: str) -> dict[str, object]:
    return {"url_private_download": f"{slack.root}{path}", "size": len(PEM)}


def test_a_redirect_on_the_same_host_is_followed(sites: tuple[Site, Site]) -> None:
    slack, _ = sites
    assert _gateway(slack).download_certificate(_file(slack, "/files/moved")) == PEM
    assert slack.seen == [
        ("/files/moved", f"Bearer {TOKEN}"),
        ("/files/cert.pem", f"Bearer {TOKEN}"),
    ]


def test_a_redirect_to_another_host_is_not_followed(sites: tuple[Site, Site]) -> None:
    slack, foreign = sites
    with pytest.raises(CertificateError, match="didn't let mdmbot download the file"):
        _gateway(slack).download_certificate(_file(slack, "/files/away"))
    assert foreign.seen == []  # the bot token never left Slack


def test_a_redirect_loop_stops(sites: tuple[Site, Site]) -> None:
    slack, _ = sites
    with pytest.raises(CertificateError, match="didn't let mdmbot download the file"):
        _gateway(slack).download_certificate(_file(slack, "/files/loop"))
    assert len(slack.seen) == 4


def test_a_slow_drip_is_cut_off_inside_slacks_ack_budget(sites: tuple[Site, Site]) -> None:
    slack, _ = sites
    started = time.monotonic()
    with pytest.raises(CertificateError, match="took too long"):
        _gateway(slack).download_certificate(_file(slack, "/files/drip"))
    # Slack: the modal submission must be acknowledged within 3 seconds.
    assert time.monotonic() - started < 2.8


def test_the_token_is_dropped_when_a_redirect_changes_host() -> None:
    def trusted(url: str) -> bool:
        return url.startswith("https://") and ".slack.com/" in url

    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "*/*"}
    here = "https://files.slack.com/files-pri/T1-F1/download/cert.pem"
    assert next_hop(here, "/files-pri/T1-F1/cert.pem", headers, trusted) == (
        "https://files.slack.com/files-pri/T1-F1/cert.pem",
        headers,
    )
    assert next_hop(here, "https://files-edge.slack.com/x", headers, trusted) == (
        "https://files-edge.slack.com/x",
        {"Accept": "*/*"},
    )
