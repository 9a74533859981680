"""New tokens of connected servers: installed into the MDM server, the file DM'd only on failure."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, Respond

from bot import metrics
from bot.slack.builders import blocks, phrases
from bot.slack.builders.blocks import Block
from bot.slack.gateway import SlackUnavailable
from core.connections import installs, links, renewals, state
from core.connections.links import ConnectionSpec
from core.connections.server_state import ServerState
from core.errors import MdmbotError
from core.people import alerts, rotation
from core.people.rotation import CaseView
from core.roles import Actor, Permission
from core.tokens import issuance, servers
from core.tokens.issuance import IssuedToken
from core.tokens.servers import ServerView

BUSY = "mdmbot is waiting on MDM servers for other requests right now; try again in a minute."

if TYPE_CHECKING:
    from bot.slack.services import BotServices, Delivery

log = logging.getLogger("mdmbot.installs")


def installed_text(label: str, server_name: str, expires_at: datetime) -> str:
    """What the person sees once the MDM server took the token."""
    return (
        f"Installed in {label} — waiting for its first use. The new token for "
        f"*{blocks.esc(server_name)}* expires {blocks.local_date(expires_at)}."
    )


def install_failed_text(
    label: str, server_name: str, error: str, *, file_sent: bool, st: ServerState | None = None
) -> str:
    """Why the install failed, what that stops, and what happens next."""
    where = "The file is in your DMs" if file_sent else "Slack didn't deliver the file either"
    text = (
        f"Couldn't install the new token for *{blocks.esc(server_name)}* in {label}: "
        f"{blocks.esc(error)} {where}."
    )
    if st is not None and st.replaced:
        text += f" The old token already stopped working, so {phrases.CANNOT_ENROL} until then."
    return f"{text} {phrases.who_acts(st)}" if st is not None else text


def failed_install_comment(issued: IssuedToken, st: ServerState | None, error: str) -> str:
    """The DM that goes with the file after a failed install: the failure first."""
    name = blocks.esc(issued.server_name)
    if st is None:
        return f"mdmbot couldn't install the new token for *{name}*: {blocks.esc(error)}"
    lines = [f":warning: {phrases.problem(issued.server_name, st)}", phrases.who_acts(st)]
    lines += [
        "Or upload this file to the MDM server yourself, where it asks for the Apple server "
        f"token. It expires {blocks.local_date(issued.expires_at)}.",
        "Keep the file private: with the server's private key it lets anyone act as this MDM "
        "server.",
    ]
    return "\n".join(lines)


def deliver_connected(
    svc: BotServices, issued: IssuedToken, user_id: str, spec: ConnectionSpec
) -> Delivery:
    """Activate the token and install it now; on failure DM the file as without a connection."""
    from bot.slack.services import Delivery

    actor, ctx = Actor(user_id), svc.ctx
    try:
        with ctx.unit_of_work() as session:
            activation = installs.issue_through(session, actor, issued.token_id, spec, ctx.now())
            install_id = installs.install_id_of(session, issued.token_id)
    except MdmbotError as exc:
        with ctx.unit_of_work() as session:
            issuance.discard_token(session, actor, issued.token_id, ctx.now(), "not activated")
        return Delivery(False, exc.message)
    metrics.tokens_issued.inc()
    assert install_id is not None
    error = "another mdmbot process is installing it."
    try:  # the token is active from here on: whatever happens, the person is told so
        outcome = installs.attempt(
            ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
        )
    except Exception as exc:
        reference = uuid.uuid4().hex[:10]
        log.error("install failed ref=%s: %s", reference, type(exc).__name__, exc_info=exc)
        outcome, error = None, f"unexpected error (reference {reference})."
    svc.refresh_home(user_id)
    if outcome is not None and outcome.installed:
        text = installed_text(spec.label(), issued.server_name, issued.expires_at)
        return Delivery(True, text, activation=activation, issued=issued)
    error = (outcome.error if outcome else None) or error
    found = svc.server_state(server_id=issued.server_id)
    st = found[1] if found else None
    comment = failed_install_comment(issued, st, error)
    try:
        channel = svc.gateway.open_dm(user_id)
        svc.gateway.send_file(channel, issued.filename, issued.content, comment)
        sent = True
    except SlackUnavailable as exc:
        log.warning("could not DM the token file after a failed install: %s", exc.error)
        sent = False
    text = install_failed_text(spec.label(), issued.server_name, error, file_sent=sent, st=st)
    return Delivery(True, text, activation=activation, issued=issued)


def renewed_notice(
    label: str, server_name: str, installed: bool, error: str | None, st: ServerState | None = None
) -> str:
    """The notice an automatic renewal posts instead of an expiry alert."""
    if installed:
        return (
            f":recycle: Renewed the token for *{blocks.esc(server_name)}* automatically and "
            f"installed it in {label} — waiting for its first use."
        )
    text = (
        f":warning: Renewed the token for *{blocks.esc(server_name)}* automatically but "
        f"couldn't install it in {label}: {blocks.esc(error or '')}"
    )
    if st is None:
        return text
    if st.replaced:
        text += f" The old token stopped working, so {phrases.CANNOT_ENROL} until then."
    return f"{text}\n{phrases.who_acts(st)}"


def notice_blocks(text: str, view: ServerView | None, st: ServerState | None) -> list[Block]:
    """A notice with the state's one button (Install again, Update API key)."""
    found = phrases.action_button(st, view.id, view.token_id) if view and st else None
    if found is None:
        return [blocks.section(text)]
    return [blocks.section(text), {"type": "actions", "block_id": "notice", "elements": [found]}]


RENEW_ALL = "renew_all_install"


def with_renew_all(svc: BotServices, case: CaseView, blocks_: list[Block]) -> list[Block]:
    """A checklist's blocks with "Renew all and install" when items left are connected."""
    left = [i.token_id for i in case.items if i.done_at is None and not i.replaced]
    if case.status != "open" or not left or svc.ctx.settings.apple_mode:  # Apple issues them
        return blocks_
    with svc.ctx.unit_of_work(readonly=True) as session:
        connected = state.connected_tokens(session, left)
    if not connected or len(blocks_) >= blocks.MAX_MESSAGE_BLOCKS:
        return blocks_
    names = ", ".join(i.server_name for i in case.items if i.token_id in connected)
    bulk = blocks.button(f"Renew and install {names}", RENEW_ALL, str(case.id), "primary")
    action = {"type": "actions", "block_id": f"renew_all:{case.id}", "elements": [bulk]}
    return [*(_unstyled(b) for b in blocks_[:-1]), action, blocks_[-1]]


def _unstyled(block: Block) -> Block:
    """A checklist line whose button gives up "primary" to the bulk button (one green button)."""
    accessory = block.get("accessory")
    if not accessory or "style" not in accessory:
        return block
    return {**block, "accessory": {k: v for k, v in accessory.items() if k != "style"}}


def renew_all(svc: BotServices, case_id: int, user_id: str) -> str:
    """Renew and install every connected token left on a checklist; one line per server."""
    svc.authorize(user_id, Permission.MANAGE_SERVERS)
    with svc.ctx.unit_of_work(readonly=True) as session:
        case = rotation.get_case(session, case_id)
        left = [i for i in case.items if i.done_at is None and not i.replaced]
        connected = state.connected_tokens(session, [i.token_id for i in left])
    lines = []
    for item in left:
        if item.token_id not in connected:
            lines.append(f"*{blocks.esc(item.server_name)}*: not connected; use its button.")
            continue
        try:
            with svc.ctx.unit_of_work() as session:
                server, _ = servers.server_of_token(session, item.token_id)
                issued = issuance.issue_token(
                    session, svc.ctx.vault, Actor(user_id), server, svc.ctx.now(),
                    expected=item.token_id,
                )  # fmt: skip
        except MdmbotError as exc:
            lines.append(f"*{blocks.esc(item.server_name)}*: {exc.message}")
            continue
        outcome = svc.deliver(issued, user_id)
        lines.append(outcome.message)
        if outcome.ok:
            svc.notify_origin({"origin": "rotation", "case_id": str(case_id)}, user_id, outcome)
    return "\n".join(lines) or "Nothing is left to renew on this checklist."


def install_again(svc: BotServices, server_id: str, user_id: str) -> str:
    """Push a server's active token to its MDM server now (`token push`); what to tell."""
    svc.authorize(user_id, Permission.MANAGE_SERVERS)
    with svc.ctx.unit_of_work() as session:
        server = servers.find_server_by_id(session, server_id)
        install_id = installs.push_active(session, server, user_id, svc.ctx.now())
        name = server.name
    ctx = svc.ctx
    outcome = installs.attempt(
        ctx.unit_of_work, ctx.vault, ctx.installer, install_id, ctx.holder, ctx.now
    )
    svc.refresh_home(user_id)
    if outcome is None or outcome.skipped:
        return f"mdmbot is already installing the token for *{blocks.esc(name)}*."
    if outcome.installed:
        return (
            f"Installed the token for *{blocks.esc(name)}* in {outcome.label} — waiting for its "
            "first use."
        )
    found = svc.server_state(server_id=int(server_id))
    who = f" {phrases.who_acts(found[1])}" if found else ""
    return (
        f"Couldn't install the token for *{blocks.esc(name)}* in {outcome.label}: "
        f"{blocks.esc(outcome.error or '')}{who}"
    )


def register(app: App, svc: BotServices, after: Callable[[], object]) -> None:
    """The "Renew all and install" button of checklists and "Install again"."""

    @app.action(RENEW_ALL)
    def on_press(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        user_id = body["user"]["id"]
        case_id = int(body["actions"][0].get("value") or 0)

        def run() -> None:
            try:
                text = renew_all(svc, case_id, user_id)
            except MdmbotError as exc:
                text = exc.message
            svc.try_dm(user_id, text)

        if not svc.on_mdm(run):
            svc.try_dm(user_id, BUSY)

    @app.action(phrases.INSTALL_AGAIN)
    def on_install_again(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        user_id = str(body["user"]["id"])
        server_id = str(body["actions"][0].get("value") or "")

        def run() -> None:
            try:
                text = install_again(svc, server_id, user_id)
                after()
            except MdmbotError as exc:
                text = f":no_entry: {exc.message}"
            svc.answer(body, respond, text)

        if not svc.on_mdm(run):
            svc.answer(body, respond, BUSY)


SWEEP_THREADS = 2
SWEEP_WAIT = 600.0  # seconds a sweep waits at its end for its MDM calls; later ones finish alone


@dataclass(frozen=True)
class _Renewed:
    renewal: renewals.DueRenewal
    install_id: int
    spec: ConnectionSpec


class SweepInstalls:
    """One sweep's MDM work: install retries and automatic renewals' installs run on their own
    pool while the sweep posts alerts and checklists, so a slow or broken MDM server never holds
    those up; started before the alerts, waited for after them."""

    def __init__(self, svc: BotServices, now: datetime, holder: str) -> None:
        self.svc, self.now, self.holder = svc, now, holder
        self.pool = ThreadPoolExecutor(SWEEP_THREADS, thread_name_prefix="mdmbot-sweep-mdm")
        self.retries: list[Future[bool]] = []
        self.renewals: list[Future[object]] = []

    def start(self) -> None:
        """Renew the tokens due (in the database, before any alert is claimed), then queue their
        installs and the retries that are due."""
        renewed = self._renew()
        mine = {r.install_id for r in renewed}
        with self.svc.ctx.unit_of_work(readonly=True) as session:
            due = [i for i in installs.due_installs(session, self.now) if i not in mine]
        self.retries = [self.pool.submit(self._retry, install_id) for install_id in due]
        self.renewals = [self.pool.submit(self._install_renewal, r) for r in renewed]

    def finish(self) -> tuple[int, int]:
        """Wait for the queued work (SWEEP_WAIT s at most); retries that ran, renewals made."""
        queued: list[Future[Any]] = [*self.retries, *self.renewals]
        wait(queued, timeout=SWEEP_WAIT)
        self.pool.shutdown(wait=False)
        for failed in (f.exception() for f in queued if f.done()):
            if failed is not None:
                log.error("sweep MDM work failed: %s", type(failed).__name__, exc_info=failed)
        tried = sum(1 for f in self.retries if f.done() and f.exception() is None and f.result())
        return tried, len(self.renewals)

    def _attempt(self, install_id: int) -> installs.InstallOutcome | None:
        ctx = self.svc.ctx
        return installs.attempt(
            ctx.unit_of_work, ctx.vault, ctx.installer, install_id, self.holder, lambda: self.now
        )

    def _retry(self, install_id: int) -> bool:
        """Retry one install (claimed, so once across replicas); whether it ran."""
        outcome = self._attempt(install_id)
        if outcome is None or outcome.skipped:
            return False
        log.info(
            "install retry server=%s attempt=%s %s",
            outcome.server_name,
            outcome.attempts,
            "installed" if outcome.installed else f"failed: {outcome.error}",
        )
        return True

    def _renew(self) -> list[_Renewed]:
        """Issue and activate a new token for each server inside its renewal window."""
        ctx, now = self.svc.ctx, self.now
        if ctx.settings.apple_mode:  # only a person can download a token from Apple
            return []
        with ctx.unit_of_work() as session:
            due = renewals.claim_renewals(session, now)
        renewed = []
        for renewal in due:
            try:
                with ctx.unit_of_work() as session:
                    server = servers.find_server_by_id(session, renewal.server_id)
                    issued = issuance.issue_token(
                        session, ctx.vault, renewals.RENEWER, server, now,
                        expected=renewal.token_id,
                    )  # fmt: skip
                    spec = links.connection_of(session, ctx.vault, renewal.server_id)
                    assert spec is not None
                    installs.issue_through(
                        session, renewals.RENEWER, issued.token_id, spec, now
                    )
                    install_id = installs.install_id_of(session, issued.token_id)
            except MdmbotError as exc:
                log.warning("automatic renewal of %s failed: %s", renewal.server_name, exc.message)
                continue
            assert install_id is not None
            renewed.append(_Renewed(renewal, install_id, spec))
        return renewed

    def _install_renewal(self, renewed: _Renewed) -> None:
        """Install a renewed token and post the one notice that says how it went."""
        from bot.slack import dep_alerts

        renewal, svc = renewed.renewal, self.svc
        outcome = self._attempt(renewed.install_id)
        installed = outcome is not None and outcome.installed
        error = outcome.error if outcome is not None else None
        found = svc.server_state(server_id=renewal.server_id, now=self.now)
        view, st = found if found else (None, None)
        text = renewed_notice(renewed.spec.label(), renewal.server_name, installed, error, st)
        notice = notice_blocks(text, view, st)
        dep_alerts.post_claimed(svc, renewal.claim_id, "autorenew", text, notice, self.now)
        with svc.ctx.unit_of_work() as session:  # the notice already says what replaced the token
            alerts.mark_edited(session, renewal.claim_id, self.now)
