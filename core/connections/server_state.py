"""One state per server, computed once: what every Slack message about a server renders.

The state comes from the active token (expiry, first use), its install through a connection
(pushed, failing, next try) and what the MDM server presents (a replaced token refused). Urgency
is a property of the state and its age: an install waiting ten minutes is not red, one waiting a
day is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum

from core.settings import SCHOOL_PORTAL
from core.tokens.servers import EXPIRING_SOON, ServerView

LATE = timedelta(days=1)  # a token not in use this long after it was issued needs someone
FAILING_LATE = timedelta(hours=1)  # an install still failing after this long is red
URGENT_DAYS = 7  # an expiry this close is red
AUTOMATIC = "mdmbot"  # who `downloaded_by` names for tokens mdmbot renewed by itself
_REFUSED_KEY = re.compile(r"^40[13] from ")  # the MDM server refused mdmbot's API key


class State(StrEnum):
    """Where a server stands; the phrase table in bot/slack/builders renders each one."""

    NO_TOKEN = "no token yet"  # noqa: S105 (a state, not a password)
    WAITING_APPLE = "waiting for a token from Apple"  # the phrases name Apple's portal
    EXPIRED = "expired"
    INSTALL_FAILING = "install failing"
    OLD_TOKEN = "still presents the replaced token"  # noqa: S105
    WAITING_UPLOAD = "waiting for upload"
    INSTALLING = "being installed"
    INSTALLED = "installed, waiting for first use"
    EXPIRES_SOON = "expires soon"
    IN_USE = "in use"


class Urgency(IntEnum):
    """How soon someone must act, most urgent first (sorting order)."""

    NOW = 0  # red: the server cannot enrol, or will not for long
    SOON = 1  # yellow: someone should act, nothing is broken yet
    WAIT = 2  # white: in hand (being installed, just installed)
    FINE = 3  # green: in use


@dataclass(slots=True)
class ServerState:
    """A server's state with the facts its phrases need (a plain slotted dataclass: a frozen one
    cost 3.7 µs to build against 0.8, 50 times per `/mdm list`)."""

    state: State
    urgency: Urgency
    connected: bool
    label: str | None  # the connection ("NanoDEP (school1)"), when connected
    holder: str | None  # who got the active token's file (a Slack id, an operator, `mdmbot`)
    since: datetime | None  # when the state began (issue, first use, expiry)
    expires_at: datetime | None
    days_left: int | None
    replaced: bool = False  # the active token replaced one, which stopped working then
    error: str | None = None
    attempts: int = 0
    next_try: datetime | None = None
    retry_helps: bool = True
    last_seen: datetime | None = None
    presented_at: datetime | None = None  # the replaced token's last refused use
    apple: bool = False  # Apple mode: a person downloads its tokens from Apple's portal
    portal: str = SCHOOL_PORTAL  # that portal's name in this mode's words

    def word(self) -> str:
        """The state word, identical on the Home, lists, alerts, DMs and the command line."""
        if self.state is State.EXPIRES_SOON:
            days = self.days_left or 0
            return f"expires in {days} day{'' if days == 1 else 's'}"
        if self.state is State.WAITING_UPLOAD and self.connected:
            return "not installed yet"
        if self.state is State.WAITING_APPLE:
            return f"waiting for a token from {self.portal}"
        return self.state.value

    @property
    def automatic(self) -> bool:
        """mdmbot renewed the active token by itself."""
        return self.holder == AUTOMATIC

    @property
    def file_sent(self) -> bool:
        """A person holds the active token's file in their Slack DMs."""
        holder = self.holder or ""
        return holder[:1] in "UW" and holder.isalnum()

    @property
    def needs_action(self) -> bool:
        """Someone has to act (red or yellow)."""
        return self.urgency <= Urgency.SOON


def retry_helps(error: str | None) -> bool:
    """False when the MDM server refused mdmbot's API key: only a person can fix that."""
    return error is None or _REFUSED_KEY.match(error) is None


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days left, counting a part day as one (every surface agrees)."""
    return max(0, math.ceil((expires_at - now) / timedelta(days=1)))


def state_of(view: ServerView, now: datetime, portal: str = SCHOOL_PORTAL) -> ServerState:
    """The one state of a listed server (annotated with its connection) as of `now`; `portal`
    names Apple's portal in Apple mode."""
    base = _Base(view, now, portal)
    if view.token_id is None or view.token_expires_at is None:
        return base.make(State.WAITING_APPLE if view.apple else State.NO_TOKEN, Urgency.SOON, None)
    if view.token_expires_at <= now:
        return base.make(State.EXPIRED, Urgency.NOW, view.token_expires_at)
    if view.apple and view.new_token_asked_at is not None:  # only a person can get Apple's
        urgent = days_left(view.token_expires_at, now) <= URGENT_DAYS
        return base.make(
            State.WAITING_APPLE, Urgency.NOW if urgent else Urgency.SOON, view.new_token_asked_at
        )
    if view.token_expires_at - now <= EXPIRING_SOON:  # renewing is the action, used or not
        urgent = days_left(view.token_expires_at, now) <= URGENT_DAYS
        since = view.token_issued_at
        return base.make(State.EXPIRES_SOON, Urgency.NOW if urgent else Urgency.SOON, since)
    if view.token_installed_at is not None:
        return base.make(State.IN_USE, Urgency.FINE, view.token_installed_at)
    return _not_in_use(view, now, base)


def _not_in_use(view: ServerView, now: datetime, base: _Base) -> ServerState:
    """A token its MDM server has not used yet: failing, presented old token, or waiting."""
    issued = view.token_issued_at
    age = now - issued if issued else timedelta(0)
    late = Urgency.NOW if view.replaced_at is not None else Urgency.SOON
    install = view.install
    if install is not None and install.status == "pending" and install.error:
        helps = retry_helps(install.error)
        urgency = late if (age >= FAILING_LATE or not helps) else Urgency.SOON
        return base.make(State.INSTALL_FAILING, urgency, issued, retry_helps=helps)
    presented, pushed = view.old_presented_at, install.installed_at if install else None
    if issued is not None and presented is not None and presented >= (pushed or issued):
        urgency = late if age >= FAILING_LATE else Urgency.SOON
        return base.make(State.OLD_TOKEN, urgency, issued)
    if install is not None and install.status == "pending":
        return base.make(State.INSTALLING, Urgency.WAIT, issued)
    if install is not None and install.status == "installed":
        urgency = Urgency.SOON if age >= LATE else Urgency.WAIT
        return base.make(State.INSTALLED, urgency, install.installed_at or issued)
    urgency = late if age >= LATE else Urgency.SOON
    return base.make(State.WAITING_UPLOAD, urgency, issued)


class _Base:
    """The facts every state of one server shares."""

    def __init__(self, view: ServerView, now: datetime, portal: str) -> None:
        self.view, self.now, self.portal = view, now, portal

    def make(
        self, state: State, urgency: Urgency, since: datetime | None, *, retry_helps: bool = True
    ) -> ServerState:
        view, install = self.view, self.view.install
        expires = view.token_expires_at
        return ServerState(
            state,
            urgency,
            connected=view.mdm_label is not None,
            label=view.mdm_label,
            holder=view.downloaded_by,
            since=since,
            expires_at=expires,
            days_left=days_left(expires, self.now) if expires else None,
            replaced=view.replaced_at is not None,
            error=install.error if install and install.status == "pending" else None,
            attempts=install.attempts if install else 0,
            next_try=install.next_try if install and retry_helps else None,
            retry_helps=retry_helps,
            last_seen=view.token_last_used_at,
            presented_at=view.old_presented_at,
            apple=view.apple,
            portal=self.portal,
        )


def by_urgency(
    views: list[ServerView], now: datetime, portal: str = SCHOOL_PORTAL
) -> list[tuple[ServerView, ServerState]]:
    """Each server with its state, most urgent first, then those whose old token stopped,
    then soonest expiry, then by name."""
    far = datetime.max.replace(tzinfo=now.tzinfo)
    paired = [(view, state_of(view, now, portal)) for view in views]
    return sorted(
        paired,
        key=lambda p: (
            p[1].urgency,
            not p[1].replaced,
            p[0].token_expires_at or far,
            p[0].name.casefold(),
        ),
    )
