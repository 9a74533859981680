"""OAuth 1.0a for `GET /session` (RFC 5849): the Authorization header read, the HMAC-SHA1 checked.

oauthlib parses the header; the signature base string is built here as RFC 5849 3.4.1 gives it
(a property test checks it against oauthlib's client).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from urllib.parse import quote

from oauthlib.common import urldecode
from oauthlib.oauth1.rfc5849 import signature, utils

from core.dep.errors import DepError

REQUIRED = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature",
            "oauth_timestamp", "oauth_nonce")


def _malformed(code: str, reason: str) -> DepError:
    return DepError(400, code, reason)


@dataclass(frozen=True)
class OAuthRequest:
    """The parts of a `GET /session` request its signature covers."""

    method: str
    uris: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = field(repr=False)
    consumer_key: str
    access_token: str = field(repr=False)
    signature: str = field(repr=False)
    timestamp: int
    nonce: str


def parse_oauth(
    authorization: str | None, method: str, uris: Sequence[str], query: str = ""
) -> OAuthRequest:
    """Read the OAuth parameters from the Authorization header only (Apple's clients send them
    there; in a query they end up in proxy logs); realm optional, never signed; a malformed
    request is a 400."""
    if not authorization:
        raise _malformed("OAUTH_HEADER_MISSING", "header_missing")
    if authorization[:6].lower() != "oauth ":
        raise _malformed("OAUTH_HEADER_MALFORMED", "header_malformed")
    items = _http_list(authorization[6:])
    keys = [item.split("=", 1)[0].strip() for item in items]
    if len(keys) != len(set(keys)):
        raise _malformed("OAUTH_PARAMETER_DUPLICATED", "parameter_duplicated")
    try:
        # RFC 5849 3.4.1.3.1 as oauthlib's `collect_parameters` reads it, the header parsed once
        queried = urldecode(query) if query else []
        found = queried + [
            (k, v) for k, v in utils.parse_keqv_list(items).items() if k != "realm"
        ]
        params = [(k, utils.unescape(v) if k.startswith("oauth_") else v) for k, v in found]
    except (ValueError, IndexError) as exc:
        raise _malformed("OAUTH_HEADER_MALFORMED", "header_malformed") from exc
    in_query = {k for k, _ in queried if k.startswith("oauth_")}
    if in_query & set(keys):
        raise _malformed("OAUTH_PARAMETER_DUPLICATED", "parameter_duplicated")
    oauth = dict(params)
    if any(not oauth.get(name) for name in REQUIRED):
        raise _malformed("OAUTH_PARAMETER_MISSING", "parameter_missing")
    if oauth["oauth_signature_method"] != "HMAC-SHA1":
        raise _malformed("OAUTH_SIGNATURE_METHOD_UNSUPPORTED", "method_unsupported")
    if oauth.get("oauth_version", "1.0") != "1.0":
        raise _malformed("OAUTH_VERSION_UNSUPPORTED", "version_unsupported")
    stamp = oauth["oauth_timestamp"]
    printable = all(v.isascii() and v.isprintable() for k, v in params if k.startswith("oauth_"))
    bad = in_query or not printable or not (stamp.isascii() and stamp.isdigit())
    if bad or len(stamp) > 12 or len(oauth["oauth_nonce"]) > 128:
        raise _malformed("OAUTH_PARAMETER_MALFORMED", "parameter_malformed")
    return OAuthRequest(
        method=method.upper(),
        uris=tuple(uris),
        params=tuple((k, v) for k, v in params if k != "oauth_signature"),
        consumer_key=oauth["oauth_consumer_key"],
        access_token=oauth["oauth_token"],
        signature=oauth["oauth_signature"],
        timestamp=int(stamp),
        nonce=oauth["oauth_nonce"],
    )


def signature_valid(request: OAuthRequest, consumer_secret: str, access_secret: str) -> bool:
    """Whether the HMAC-SHA1 signature matches for one of the URLs the client may have signed."""
    # RFC 5849 3.4.2: the key is both secrets, each percent-encoded, joined by "&".
    key = f"{_escape(consumer_secret)}&{_escape(access_secret)}".encode()
    # RFC 5849 3.4.1.3.2: the encoded names and values, sorted, as name=value joined by "&".
    pairs = sorted((_escape(k), _escape(v)) for k, v in request.params)
    parameters = "&".join(f"{k}={v}" for k, v in pairs)
    presented = request.signature.encode("utf-8", "replace")
    for uri in request.uris:
        base_uri = _base_string_uri(uri)
        if base_uri is None:  # a URL oauthlib cannot normalise was not what the client signed
            continue
        # RFC 5849 3.4.1.1: method, base string URI and parameters, each encoded, joined by "&".
        base = f"{_escape(request.method)}&{_escape(base_uri)}&{_escape_encoded(parameters)}"
        digest = hmac.new(key, base.encode(), hashlib.sha1).digest()
        if hmac.compare_digest(base64.b64encode(digest), presented):
            return True
    return False


@lru_cache(maxsize=256)
def _base_string_uri(uri: str) -> str | None:
    """oauthlib's RFC 5849 3.4.1.2 base string URI of a URL (None if it cannot be normalised);
    a server is reached under few URLs, so each is normalised once."""
    try:
        return signature.base_string_uri(uri)
    except ValueError:
        return None


def _http_list(text: str) -> list[str]:
    """`parse_http_list` of the header's parameters, without its character-by-character loop
    when no quoted value holds a comma or a backslash (the usual header): the same items."""
    quoted = text.split('"')
    if "\\" in text or len(quoted) % 2 == 0 or any("," in part for part in quoted[1::2]):
        return utils.parse_http_list(text)
    parts = text.split(",")
    if not parts[-1]:  # parse_http_list keeps a last part only when it is not empty
        parts.pop()
    return [part.strip() for part in parts]


# RFC 5849 3.6: all but ALPHA, DIGIT and -._~ percent-encoded. Names, keys, secrets and URLs come
# back with every request of a server, so each is encoded once (0.1 µs where `quote` takes 1-2).
_escape = lru_cache(maxsize=4096)(partial(quote, safe=""))


def _escape_encoded(parameters: str) -> str:
    """`_escape` of the joined parameters: encoded names and values hold only unreserved
    characters and "%", so the "%", "=" and "&" are all there is to encode (6 µs to 0.3)."""
    return parameters.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
