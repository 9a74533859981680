"""The only place that calls the Slack Web API for files, DMs and posts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.keepalive import KeepAliveWebClient
from bot.slack import download
from core.errors import CertificateError, InvalidInput, MdmbotError
from core.sealing import STALE, seal, unseal
from core.tokens.certificates import MAX_CERT_BYTES

log = logging.getLogger("mdmbot.slack")
# The SDK logs every attempt of every retried call; SlackGateway logs one line per failed call.
SDK_LOG = logging.getLogger("mdmbot.slack.sdk")
SDK_LOG.setLevel(logging.CRITICAL)

SLACK_FILE_HOSTS = ("files.slack.com", "slack.com", "slack-files.com")


class SlackUnavailable(MdmbotError):
    """Slack refused or failed a call; `error` is Slack's error code."""

    def __init__(self, message: str, *, error: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


@dataclass(frozen=True)
class Posted:
    """Where a message landed."""

    channel: str
    ts: str


def make_client(token: str, api_url: str) -> WebClient:
    """A Web API client for `api_url` that keeps its connections open and retries rate limits,
    5xx and dropped connections."""
    return KeepAliveWebClient(
        token=token,
        base_url=api_url,
        timeout=15,
        logger=SDK_LOG,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackGateway:
    """Slack calls mdmbot makes, with Slack errors turned into SlackUnavailable."""

    def __init__(self, client: WebClient, api_url: str, *, metadata_key: bytes) -> None:
        self.client = client
        self.api_url = api_url
        self.metadata_key = metadata_key

    def _sealed(self, view: dict[str, Any]) -> dict[str, Any]:
        """The view with its private_metadata signed (Slack hands it back in submissions)."""
        if not view.get("private_metadata"):
            return view
        return {**view, "private_metadata": seal(self.metadata_key, view["private_metadata"])}

    def read_metadata(self, view: dict[str, Any]) -> dict[str, Any]:
        """A submitted view's private_metadata, refused (InvalidInput) unless mdmbot signed it."""
        sealed = str(view.get("private_metadata") or "")
        if not sealed:
            return {}
        try:
            data = json.loads(unseal(self.metadata_key, sealed))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InvalidInput(STALE)
        return data

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            status = exc.response.status_code
            log.warning("slack %s failed: %s (HTTP %s)", method, error, status)
            raise SlackUnavailable(
                f"Slack refused to {what} ({error}).", error=error, status=status
            ) from exc
        except (SlackClientError, OSError) as exc:
            log.warning("slack %s failed: %s", method, type(exc).__name__)
            raise SlackUnavailable(
                f"Slack could not be reached to {what}.", error="unreachable"
            ) from exc

    def check_token(self) -> dict[str, Any]:
        """auth.test: who the bot is; SlackUnavailable when the token or the API is wrong."""
        return dict(self._call("check SLACK_BOT_TOKEN", "auth_test").data)

    def open_dm(self, user_id: str) -> str:
        """The D… channel id of the bot's DM with `user_id` (Slack: files reach a DM this way)."""
        response = self._call("open a DM", "conversations_open", users=user_id)
        return str(response["channel"]["id"])

    def send_file(self, channel: str, filename: str, content: bytes, comment: str) -> None:
        """Upload a file into a channel (a D… DM) with a comment."""
        self._call(
            "upload the token file",
            "files_upload_v2",
            channel=channel,
            content=content,
            filename=filename,
            title=filename,
            initial_comment=comment,
        )

    def file_names_in(self, channel: str, since: datetime) -> set[str]:
        """Names of the files shared in a channel since a time (files.list, files:read)."""
        response = self._call(
            "list files",
            "files_list",
            channel=channel,
            ts_from=str(int(since.timestamp()) - 1),
            count=100,
        )
        return {str(f.get("name")) for f in response.get("files") or []}

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> Posted:
        """Post a message (a reply in a thread with `thread_ts`, also shown in the channel)."""
        extra: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        if thread_ts and broadcast:
            extra["reply_broadcast"] = True
        response = self._call(
            "post a message",
            "chat_postMessage",
            channel=channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
            **extra,
        )
        return Posted(str(response["channel"]), str(response["ts"]))

    def permalink(self, channel: str, ts: str) -> str:
        """A link to a message (shown in the channel, it opens the message)."""
        response = self._call(
            "link to a message", "chat_getPermalink", channel=channel, message_ts=ts
        )
        return str(response["permalink"])

    def dm(self, user_id: str, text: str, blocks: list[dict[str, Any]] | None = None) -> Posted:
        """Send a direct message."""
        return self.post(self.open_dm(user_id), text, blocks)

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """Edit a message in place."""
        self._call(
            "update a message", "chat_update", channel=channel, ts=ts, text=text, blocks=blocks
        )

    def ephemeral(
        self, channel: str, user_id: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        """Show a message to one person in a channel."""
        self._call(
            "reply", "chat_postEphemeral", channel=channel, user=user_id, text=text, blocks=blocks
        )

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """Open a modal; return its view id."""
        response = self._call(
            "open a dialog", "views_open", trigger_id=trigger_id, view=self._sealed(view)
        )
        return str(response["view"]["id"])

    def update_view(self, view_id: str, view: dict[str, Any]) -> None:
        """Replace an open modal."""
        self._call("update a dialog", "views_update", view_id=view_id, view=self._sealed(view))

    def publish_home(self, user_id: str, view: dict[str, Any]) -> None:
        """Publish a user's App Home tab."""
        self._call("refresh the App Home", "views_publish", user_id=user_id, view=view)

    def is_member(self, channel: str) -> bool:
        """conversations.info: whether the bot is in `channel` (needs it to post there)."""
        response = self._call("look up a channel", "conversations_info", channel=channel)
        return bool(response["channel"].get("is_member"))

    def user_info(self, user_id: str) -> dict[str, Any]:
        """Slack's user object."""
        response = self._call("look up a user", "users_info", user=user_id)
        return dict(response["user"])

    def download_certificate(self, file: dict[str, Any]) -> bytes:
        """Fetch an uploaded certificate; refuse foreign hosts, HTML sign-in pages, large files."""
        return self.download_file(
            file, limit=MAX_CERT_BYTES, error=CertificateError, too_large=_too_large()
        )

    def download_file(
        self,
        file: dict[str, Any],
        *,
        limit: int,
        too_large: str,
        error: type[MdmbotError] = MdmbotError,
        deadline: float = download.DEADLINE,
    ) -> bytes:
        """Fetch an uploaded file with the bot token; refuse foreign hosts, HTML, large files."""
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not self._trusted(url):
            raise error("That file isn't stored on Slack; upload it again.")
        if int(file.get("size") or 0) > limit:
            raise error(too_large)
        try:
            fetched = download.fetch(
                url, str(self.client.token), limit, self._trusted, deadline=deadline
            )
        except download.DownloadFailed as exc:
            log.warning("file download failed: %s", exc.reason)
            if isinstance(exc, download.TooSlow):
                raise error("Slack took too long to send the file; try again.") from exc
            raise error("Slack didn't let mdmbot download the file; try again.") from exc
        ctype, data = fetched.content_type, fetched.body
        # Slack answers a private file fetched without the bot token with a 200 HTML sign-in page.
        if ctype.startswith("text/html") or data[:64].lstrip().lower().startswith(
            (b"<!doctype", b"<html")
        ):
            raise error(
                "Slack returned a web page instead of the file; check that "
                "the app has the files:read scope, then upload it again."
            )
        if len(data) > limit:
            raise error(too_large)
        return data

    def _trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        if (
            parts.scheme == "https"
            and parts.hostname is not None
            and (
                parts.hostname in SLACK_FILE_HOSTS
                or parts.hostname.endswith((".slack.com", ".slack-edge.com"))
            )
        ):
            return True
        api = urlsplit(self.api_url)
        return (parts.scheme, parts.hostname, parts.port) == (api.scheme, api.hostname, api.port)


def _too_large() -> str:
    return (
        f"That file is larger than {MAX_CERT_BYTES // 1024} KiB; a public key certificate is a "
        "few KiB. Upload the .pem or .der certificate."
    )
