"""Property: whatever a caller sends, the DEP parsers answer with a refusal code (DepError),
never another exception (which would be a 500 and a traceback in the log)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode
from urllib.request import parse_http_list

from hypothesis import given, settings
from hypothesis import strategies as st
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

from bot.dep.devices import parse_body
from core.dep import auth as dep_auth
from core.dep import cursors, oauth
from core.dep.auth import DepError

NOW = datetime(2026, 11, 27, 14, 3, 34, tzinfo=UTC)
PIECES = st.sampled_from(
    ['oauth_', "consumer_key", "token", "timestamp", "nonce", "signature", '="', '"', ",", "=",
     " ", "%", "C2%B2", "\u00b2", "realm", "OAuth ", "\\", "é", "\x00", "1.0", "HMAC-SHA1"]
)
HEADERS = st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(header=HEADERS, query=HEADERS)
def test_any_authorization_header_parses_or_is_refused(header: str, query: str) -> None:
    for sent in (header, "OAuth " + header):
        try:
            dep_auth.parse_oauth(sent, "GET", ["http://dep.example/session"], query)
        except DepError as refused:
            assert refused.status == 400


@settings(max_examples=2000, deadline=None)
@given(header=st.one_of(HEADERS, st.text(alphabet='ab=", \\\t', max_size=30)))
def test_the_header_splits_into_the_items_parse_http_list_gives(header: str) -> None:
    assert oauth._http_list(header) == parse_http_list(header)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=60), HEADERS, st.binary(max_size=40).map(repr)))
def test_any_cursor_decodes_or_is_refused(text: str) -> None:
    for sent in (text, text + "." + text, "MToxOjA6MTc5NjM5NzgxNDpkOg." + text):
        try:
            cursors.decode(b"k" * 32, sent, 1, NOW)
        except DepError as refused:
            assert refused.code == "INVALID_CURSOR"


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)))
def test_any_body_parses_or_is_malformed(raw: bytes) -> None:
    for sent in (raw, b"[" * 50 + raw, b'{"devices": [' + raw + b"]}"):
        try:
            parse_body(sent)
        except DepError as refused:
            assert refused.code == "MALFORMED_REQUEST_BODY"


SECRETS = st.text(min_size=1, max_size=12)
QUERY_VALUES = st.lists(
    st.tuples(st.text("abc_é &=+%", min_size=1, max_size=6), st.text(max_size=6)), max_size=3
)


@settings(max_examples=200, deadline=None)
@given(consumer=SECRETS, access=SECRETS, query=QUERY_VALUES, https=st.booleans())
def test_what_an_oauth_client_signs_verifies_and_nothing_else(
    consumer: str, access: str, query: list[tuple[str, str]], https: bool
) -> None:
    encoded = urlencode(query)
    signed_uri = f"{'https' if https else 'http'}://dep.example:8443/session"
    client = Client(
        "CK_1",
        client_secret=consumer,
        resource_owner_key="AT_1",
        resource_owner_secret=access,
        signature_method=SIGNATURE_HMAC_SHA1,
        timestamp=str(int(NOW.timestamp())),
        nonce="n0",
    )
    _, headers, _ = client.sign(signed_uri + ("?" + encoded if encoded else ""), "GET")
    uris = ["http://dep.example:8443/session", "https://dep.example:8443/session"]
    request = dep_auth.parse_oauth(headers["Authorization"], "GET", uris, encoded)
    assert dep_auth.signature_valid(request, consumer, access)
    assert not dep_auth.signature_valid(request, consumer + "x", access)
    assert not dep_auth.signature_valid(request, consumer, access + "x")
