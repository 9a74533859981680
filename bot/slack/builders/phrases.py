"""The phrase table: each server state in the same words on every surface.

Problem first, then the one action and who must take it. Connected and file-based servers differ
only where the action differs (mdmbot installs again; a person uploads the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.slack.builders.blocks import (
    Block,
    button,
    esc,
    esc_message,
    file_holder,
    local_date,
    local_time,
    mention,
    plural,
)
from core.apple.refusals import Refused
from core.connections.server_state import ServerState, State, Urgency

ICONS = {Urgency.NOW: "🔴", Urgency.SOON: "🟡", Urgency.WAIT: "⚪️", Urgency.FINE: "🟢"}
KEY = "🔴 cannot enrol, or soon won't · 🟡 needs someone · ⚪️ in hand · 🟢 in use"
GET, RENEW, RESEND = "server_token", "server_token", "resend_token"
INSTALL_AGAIN, UPDATE_KEY = "install_again", "update_api_key"
FROM_APPLE = "apple_token_upload"  # opens the modal to upload a token from Apple's portal
GET_FROM_APPLE = (
    "get a new token from {portal} (the server's page, *Download Token*) and drop "
    "the .p7m file in a DM with mdmbot, or press *Upload token*"
)
CANNOT_ENROL = "it cannot enrol or sync devices"


@dataclass(frozen=True)
class Action:
    """The one thing to do about a server: a button, and who must press it."""

    label: str
    action_id: str
    on_token: bool  # the button's value is the token id (else the server id)
    holder: str | None = None  # only this Slack user can press it (the file is in their DMs)


def word(st: ServerState) -> str:
    """The state word (plain text), identical on the Home, lists, alerts and DMs."""
    return st.word()


def icon(st: ServerState) -> str:
    """The colour of the state's urgency."""
    return ICONS[st.urgency]


def action(st: ServerState) -> Action | None:
    """The one action this state calls for (None: nothing to do, or only wait)."""
    state = st.state
    if state is State.WAITING_APPLE or (st.apple and state in (State.EXPIRED, State.EXPIRES_SOON)):
        return Action("Upload token", FROM_APPLE, on_token=False)
    if state is State.NO_TOKEN:
        return Action("Get token", GET, on_token=False)
    if state in (State.EXPIRED, State.EXPIRES_SOON):
        return Action("Renew token", RENEW, on_token=False)
    if state is State.INSTALL_FAILING and not st.retry_helps:
        return Action("Update API key", UPDATE_KEY, on_token=False)
    if st.connected and (
        state in (State.INSTALL_FAILING, State.OLD_TOKEN, State.WAITING_UPLOAD)
        or (state is State.INSTALLED and st.urgency <= Urgency.SOON)
    ):
        return Action("Install again", INSTALL_AGAIN, on_token=False)
    if state in (State.OLD_TOKEN, State.WAITING_UPLOAD) and st.file_sent:
        return Action("Send me the file again", RESEND, on_token=True, holder=st.holder)
    return None


def who_acts(st: ServerState) -> str:
    """The sentence naming who must act, and how (mrkdwn)."""
    state = st.state
    if state is State.WAITING_APPLE or (st.apple and state in (State.EXPIRED, State.EXPIRES_SOON)):
        how = f"; mdmbot installs it into {esc(st.label)}" if st.label else ""
        return (
            "An Administrator, Site Manager or Device Enrollment Manager must "
            f"{GET_FROM_APPLE.format(portal=st.portal)}{how}."
        )
    if state is State.NO_TOKEN:
        how = f"mdmbot installs it into {esc(st.label)}" if st.label else "its file comes by DM"
        return f"A Site Manager or Administrator presses *Get token*: {how}."
    if state in (State.EXPIRED, State.EXPIRES_SOON):
        if st.connected:
            return f"*Renew token*: mdmbot installs the new token into {esc(st.label or '')}."
        return "*Renew token*: the new file comes to you by DM; upload it to the MDM server."
    if state is State.INSTALL_FAILING and not st.retry_helps:
        return (
            "The MDM server refused mdmbot's API key, so retrying cannot help: an "
            "Administrator presses *Update API key*."
        )
    if state is State.INSTALL_FAILING:
        when = f" {local_time(st.next_try)}" if st.next_try else ""
        return f"mdmbot tries again{when}; *Install again* tries now."
    if st.connected and state in (State.OLD_TOKEN, State.WAITING_UPLOAD):
        return "*Install again* sends the new token to the MDM server."
    if state is State.INSTALLED and st.urgency <= Urgency.SOON:
        return "*Install again* if the MDM server lost it; otherwise wait for its next sync."
    if state in (State.OLD_TOKEN, State.WAITING_UPLOAD):
        if st.file_sent and st.apple:  # dropped in Slack, or imported on the command line
            return (
                f"{mention(st.holder)} uploads the token file to the MDM server (*Send me the "
                "file again* puts it in their DMs)."
            )
        if st.file_sent:
            return (
                f"{mention(st.holder)} uploads the new token file to the MDM server (the file "
                "is in their DMs)."
            )
        return f"Whoever has the file ({file_holder(st.holder)}) uploads it to the MDM server."
    if state in (State.INSTALLING, State.INSTALLED):
        return "Nothing to do: mdmbot says here when the MDM server first uses it."
    return ""


def problem(name: str, st: ServerState) -> str:
    """The state as a sentence about the server, problem first (mrkdwn)."""
    server, state = f"*{esc(name)}*", st.state
    stopped = ""
    if st.replaced:
        stopped = f" The old token stopped working, so {CANNOT_ENROL} until then."
    if state is State.WAITING_APPLE and st.expires_at is not None:
        who = mention(st.holder) if st.file_sent else esc(st.holder or "someone")
        return (
            f"{server} is {word(st)}: a checklist asks to "
            f"replace the one {who} downloaded (it works until "
            f"{local_date(st.expires_at)})."
        )
    if state is State.WAITING_APPLE:
        return f"{server} is {word(st)}, so {CANNOT_ENROL}."
    if state is State.NO_TOKEN:
        return f"{server} has no token yet, so {CANNOT_ENROL}."
    if state is State.EXPIRED:
        return f"{server}: token expired {local_date(st.expires_at)}, so {CANNOT_ENROL}."
    if state is State.INSTALL_FAILING:
        times = "once" if st.attempts == 1 else plural(st.attempts, "time")
        return (
            f"{server}: install failing — installing into {esc(st.label or '')} failed "
            f"{times}: {esc(st.error or '')}{stopped}"
        )
    if state is State.OLD_TOKEN:
        last = f" (last {local_time(st.presented_at)})" if st.presented_at else ""
        return (
            f"{server}: the MDM server still presents the replaced token{last}; mdmbot refuses "
            f"it, so {CANNOT_ENROL}."
        )
    if state is State.WAITING_UPLOAD and st.connected:
        return f"{server}: the new token is not installed yet in {esc(st.label or '')}.{stopped}"
    if state is State.WAITING_UPLOAD:
        return f"{server}: the new token is waiting for upload ({file_holder(st.holder)}).{stopped}"
    if state is State.INSTALLING:
        return f"{server}: the new token is being installed into {esc(st.label or '')}."
    if state is State.INSTALLED:
        when = f" {local_time(st.since)}" if st.since else ""
        first = "Apple to see the MDM server connect" if st.apple else "the MDM server's first use"
        return f"{server}: installed in {esc(st.label or '')}{when}, waiting for {first}."
    if state is State.EXPIRES_SOON:
        left = plural(st.days_left or 0, "day")
        return f"{server}: token expires in {left} ({local_date(st.expires_at)})."
    seen = f", last seen {local_time(st.last_seen)}" if st.last_seen else ""
    return f"{server}: in use since {local_date(st.since)}{seen}."


def sentence(name: str, st: ServerState) -> str:
    """Problem, then who must act (mrkdwn; one paragraph)."""
    who = who_acts(st)
    return f"{icon(st)} {problem(name, st)}" + (f"\n{who}" if who else "")


def line(name: str, st: ServerState) -> str:
    """One server on one line: colour, name, state word (`/mdm list`, the Home's healthy list)."""
    dated = st.expires_at and st.state not in (State.EXPIRED, State.EXPIRES_SOON)
    tail = f" · expires {local_date(st.expires_at)}" if dated else ""
    return f"{icon(st)} *{esc(name)}* — {word(st)}{tail}"


def action_button(
    st: ServerState,
    server_id: int,
    token_id: int | None,
    viewer: str | None = None,
    style: str | None = "primary",
) -> Block | None:
    """The state's one button, or None (a resend is shown only to whoever holds the file)."""
    todo = action(st)
    if todo is None or (todo.holder and viewer and viewer != todo.holder):
        return None
    value = str(token_id if todo.on_token else server_id)
    return button(todo.label, todo.action_id, value, style)


def token_from(st: ServerState) -> str:
    """Who produced the active token, in the words that are true for it (mrkdwn)."""
    if st.automatic:
        return "Renewed automatically by mdmbot"
    holder = st.holder or "someone"
    who = mention(holder) if st.file_sent else esc(holder.removeprefix("operator:"))
    if st.connected:
        return f"{'Renewed' if st.replaced else 'Connected'} by {who}"
    return f"Downloaded by {who}" if st.file_sent else f"Saved by {who} on the command line"


def renewed_by(holder: str | None, by: str | None = None) -> str:
    """Who replaced a token, in the words people read (mrkdwn)."""
    who = by or holder or "someone"
    if who in ("mdmbot", "operator:mdmbot"):
        return "Renewed automatically by mdmbot"
    if who.startswith("operator:"):
        return f"Renewed by {esc(who.removeprefix('operator:'))} on the command line"
    return f"Renewed by {mention(who)}"


APPLE_FAILURES = {
    "unreachable": "mdmbot cannot reach {portal}",
    "refused": "{portal} refuses mdmbot's API account",
    "malformed": "{portal} answered something mdmbot cannot read",
    "rejected": "{portal} refused mdmbot's sync",
}


def apple_sync_problem(
    kind: str, message: str, since: datetime | None, last_success: datetime | None, portal: str
) -> str:
    """The Apple sync's failure, on the Home and in its one alert; `portal` is Apple's."""
    headline = APPLE_FAILURES.get(kind, APPLE_FAILURES["unreachable"]).format(portal=portal)
    as_of = f"as Apple showed them {local_time(last_success)}" if last_success else "not synced yet"
    started = f" (since {local_time(since)})" if since else ""
    return (
        f"⚠️ *{headline}*{started}: {esc(message)} Servers and devices here are {as_of}; "
        "nothing was removed. mdmbot tries again every sweep."
    )


APPLE_SYNC_BACK = "✅ mdmbot syncs with {portal} again."


def token_refused(refused: Refused) -> str:
    """A refused token file: its one alert, and its line on the Home until a token is taken in."""
    by = refused.refused_by
    who = mention(by) if by[:1] in "UW" and by.isalnum() else f"{esc(by)} on the command line"
    return (
        f"⛔ A token file for *{esc(refused.server_name)}* was refused "
        f"{local_time(refused.refused_at)} (from {who}): {esc_message(refused.reason)}"
    )
