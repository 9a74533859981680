"""Orchestration shared by listeners: authorise, deliver tokens, refresh the App Home."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import metrics
from bot.context import AppContext
from bot.http.backlog import Backlog
from bot.slack import installs
from bot.slack.builders import blocks, home_blocks
from bot.slack.gateway import SlackGateway, SlackUnavailable
from core.apple import status as apple_status
from core.asm import accounts as api_accounts
from core.connections import links
from core.connections import state as links_state
from core.connections.server_state import ServerState
from core.devices import inventory as devices
from core.errors import MdmbotError
from core.people import persons as people
from core.people import rotation
from core.roles import Actor, Permission, Role
from core.tokens import issuance, servers
from core.tokens.issuance import Activation, IssuedToken
from core.tokens.servers import ServerView

log = logging.getLogger("mdmbot.bot")

AFTER_ACK_BACKLOG = 4  # commands acked whose work is still queued or running, per process
MDM_THREADS = 4  # calls to MDM servers at once, per process (never on bolt's listener threads)
MDM_QUEUE = 16  # people's MDM calls queued or running; more are refused until some finish
SLACK_TARGET = "slack:"  # a token's delivery target: the DM channel it is uploaded to


def new_reference() -> str:
    """A short id that ties what a user is told to a log line."""
    return uuid.uuid4().hex[:10]


def crash_text(reference: str) -> str:
    """What a user is told when a request failed unexpectedly: part of it may have happened."""
    return (
        ":warning: Something went wrong in mdmbot before it finished, so part of this may have "
        f"happened: check (e.g. `/mdm list`) before you try again. Reference: `{reference}`."
    )


@dataclass(frozen=True)
class Delivery:
    """The outcome of sending a token file to someone's DM."""

    ok: bool
    message: str
    reference: str | None = None
    activation: Activation | None = None
    issued: IssuedToken | None = None
    tokenless: int | None = None  # the server left without any token (offer "Get token")


class BotServices:
    """What listeners call: one method per user-visible step."""

    def __init__(self, ctx: AppContext, gateway: SlackGateway) -> None:
        self.ctx = ctx
        self.gateway = gateway
        self.background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mdmbot-bg")
        self.after_ack = Backlog(AFTER_ACK_BACKLOG, threads=16, name="mdmbot-after-ack")
        self.mdm = Backlog(MDM_QUEUE, threads=MDM_THREADS, name="mdmbot-mdm")
        self._known: set[str] = set()
        self.origin_handlers: dict[str, Callable[[dict[str, Any], str, Delivery], None]] = {}

    def notify_origin(self, meta: dict[str, Any], user_id: str, outcome: Delivery) -> None:
        """Update the messages a new token affects: alerts about the old one, ticked checklists."""
        for key in (str(meta.get("origin", "")), "*"):
            handler = self.origin_handlers.get(key)
            if handler is None:
                continue
            try:
                handler(meta, user_id, outcome)
            except Exception:
                log.exception("could not update the message after a new token (%s)", key)

    def on_mdm(self, fn: Callable[..., object], *args: object) -> bool:
        """Run `fn(*args)`, which calls MDM servers, on their own pool; False when it is full."""
        if self.mdm.pending >= MDM_QUEUE:
            return False

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("MDM work failed (%s)", getattr(fn, "__name__", fn))

        self.mdm.submit(run)
        return True

    def connected(self, server_id: int) -> bool:
        """Whether the server's tokens are installed through a connection."""
        with self.ctx.unit_of_work(readonly=True) as session:
            return links.connection_row(session, server_id) is not None

    def try_dm(self, user_id: str, text: str, extra: list[blocks.Block] | None = None) -> None:
        """Send a DM if Slack lets us (used to report failures), with any buttons in `extra`."""
        try:
            self.gateway.dm(user_id, text, [blocks.section(text), *(extra or [])])
        except SlackUnavailable:
            log.info("could not DM %s", user_id)

    def answer(self, body: dict[str, Any], respond: Callable[..., Any], text: str) -> None:
        """Answer a button's presser: ephemeral where Slack gave a response_url, else by DM."""
        if body.get("response_url"):
            respond(text=text, response_type="ephemeral", replace_original=False)
        else:
            self.try_dm(str(body["user"]["id"]), text)

    def remember_later(self, user_id: str, name: str | None) -> None:
        """Record the acting person in the background, so the ack is not delayed."""
        if not user_id or user_id in self._known:
            return

        def run() -> None:
            try:
                self.remember(user_id, name)
            except Exception:
                log.exception("could not record person %s", user_id)

        self.background.submit(run)

    def role(self, user_id: str) -> Role | None:
        """The mdmbot role of a Slack user."""
        with self.ctx.unit_of_work(readonly=True) as session:
            return people.role_of(session, user_id)

    def authorize(self, user_id: str, permission: Permission) -> None:
        """Raise PermissionDenied unless the user may do `permission` (one read, run alone)."""
        with self.ctx.statements_alone() as connection:
            people.authorize(connection, Actor(user_id), permission)

    def remember(self, user_id: str, name: str | None) -> None:
        """Record a person the first time they act (Slack scrubs deleted profiles)."""
        if user_id in self._known:
            return
        with self.ctx.unit_of_work(readonly=True) as session:
            known = people.is_recorded(session, user_id)
        if known:
            self._known.add(user_id)
            return
        try:
            info = self.gateway.user_info(user_id)
        except SlackUnavailable:
            info = {}
        profile = info.get("profile") or {}
        with self.ctx.unit_of_work() as session:
            people.ensure_person(
                session,
                user_id,
                self.ctx.now(),
                name=info.get("real_name") or name or info.get("name"),
                email=profile.get("email"),
            )
        if info:
            self._known.add(user_id)

    def server_by_id(self, server_id: object) -> ServerView:
        """A live server by id (ids come from buttons and metadata; checked here)."""
        with self.ctx.unit_of_work(readonly=True) as session:
            view = servers.get_server_view_by_id(session, server_id)
            return links_state.annotate(session, [view])[0]

    @property
    def portal(self) -> str | None:
        """Apple's portal in this mode's words (Apple mode), else None."""
        settings = self.ctx.settings
        return settings.apple_portal if settings.apple_mode else None

    def server_state(
        self,
        *,
        server_id: int | None = None,
        token_id: int | None = None,
        now: datetime | None = None,
    ) -> tuple[ServerView, ServerState] | None:
        """A live server (by id, or by one of its tokens) with its state; None if gone."""
        with self.ctx.unit_of_work(readonly=True) as session:
            if server_id is None and token_id is not None:
                server_id = links_state.server_of_token(session, token_id)
            if server_id is None:
                return None
            now = now or self.ctx.now()
            return links_state.server_state(session, server_id, now, self.ctx.settings.apple_portal)

    def server_by_name(self, name: str) -> ServerView:
        """A live server by name."""
        with self.ctx.unit_of_work(readonly=True) as session:
            view = servers.get_server_view(session, name)
            return links_state.annotate(session, [view])[0]

    def deliver(self, issued: IssuedToken, user_id: str) -> Delivery:
        """Mark the token delivering, DM its file, activate it; on failure the old one stays.

        A connected server's token is installed into its MDM server instead (bot/slack/installs).
        """
        with self.ctx.unit_of_work(readonly=True) as session:
            spec = links.connection_of(session, self.ctx.vault, issued.server_id)
        if spec is not None:
            return installs.deliver_connected(self, issued, user_id, spec)
        actor = Actor(user_id)
        comment = blocks.token_comment(
            issued.server_name,
            issued.expires_at,
            issued.warnings,
            replaces_active=issued.replaces_active,
            certificate_not_after=issued.certificate_not_after,
        )
        try:
            channel = self.gateway.open_dm(user_id)
            with self.ctx.unit_of_work() as session:
                refusal = issuance.start_delivery(
                    session, actor, issued.token_id, f"{SLACK_TARGET}{channel}", self.ctx.now()
                )
            if refusal is not None:
                return Delivery(False, refusal)
            self.gateway.send_file(channel, issued.filename, issued.content, comment)
        except SlackUnavailable as exc:
            return self._undelivered(issued, actor, exc)
        try:
            with self.ctx.unit_of_work() as session:
                activation = issuance.activate_token(
                    session, actor, issued.token_id, self.ctx.now()
                )
        except MdmbotError as exc:
            with self.ctx.unit_of_work() as session:
                issuance.discard_token(
                    session, actor, issued.token_id, self.ctx.now(), "not activated"
                )
            return Delivery(False, f"{exc.message} The file you were sent will not work.")
        metrics.tokens_issued.inc()
        self.refresh_home(user_id)
        stopped = (
            " The previous token has now stopped working: upload the new one to the MDM server."
            if activation.superseded
            else ""
        )
        return Delivery(
            True,
            f"The new token for *{blocks.esc(issued.server_name)}* is in your "
            f"DMs. It expires {blocks.local_date(issued.expires_at)}.{stopped}",
            activation=activation,
            issued=issued,
        )

    def _undelivered(self, issued: IssuedToken, actor: Actor, exc: SlackUnavailable) -> Delivery:
        reference = new_reference()
        metrics.token_delivery_failures.inc()
        log.error(
            "token delivery failed ref=%s server=%s token=%s error=%s",
            reference,
            issued.server_name,
            issued.token_id,
            exc.error,
        )
        with self.ctx.unit_of_work() as session:
            issuance.discard_token(
                session, actor, issued.token_id, self.ctx.now(), f"delivery failed ({exc.error})"
            )
        name = blocks.esc(issued.server_name)
        if not issued.replaces_active:
            return Delivery(
                False,
                f"Slack didn't deliver the token file, so *{name}* is linked but has no token "
                "yet. Press *Get token* to try again in a minute.",
                reference,
                tokenless=issued.server_id,
            )
        return Delivery(
            False,
            f"Slack didn't deliver the token file for *{name}*, so no new token was issued and "
            "the previous token stays valid. Try again in a minute.",
            reference,
        )

    def refresh_home(self, user_id: str) -> None:
        """Republish a user's App Home (best effort)."""
        with self.ctx.unit_of_work(readonly=True) as session:
            views = links_state.listed(session)
            role = people.role_of(session, user_id)
            cases = rotation.open_cases(session) if role else []
            admins = [] if role else people.administrators(session)
            counts = devices.device_counts(session) if role else {}
            keys, apple = None, None
            if role and self.ctx.settings.apple_mode:
                apple = apple_status.health(session)
            if role == Role.ADMINISTRATOR and not self.ctx.settings.apple_mode:  # none served
                keys = api_accounts.list_accounts(session, Actor(user_id))
        try:
            self.gateway.publish_home(
                user_id,
                home_blocks.home_view(
                    views,
                    self.ctx.now(),
                    role,
                    viewer=user_id,
                    cases=cases,
                    admins=admins,
                    device_counts=counts,
                    api_accounts=keys,
                    apple=apple,
                    portal=self.portal,
                ),
            )
        except SlackUnavailable:
            log.info("could not refresh App Home for %s", user_id)
