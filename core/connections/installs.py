"""Installing tokens into MDM servers: the install state, retries with backoff, and their claims.

An install is claimed before it is tried (a conditional UPDATE, like alert deliveries), so two
replicas or a sweep and a person never push the same token twice at once; the push itself runs
outside any transaction, and its result is recorded only by the claim's holder.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.connections.links import (
    ConnectionSpec,
    Installed,
    Installer,
    InstallError,
    TokenPush,
    connection_of,
    connection_row,
)
from core.connections.server_state import retry_helps
from core.errors import TokenConflict
from core.models import Server, Token, TokenInstall, TokenStatus
from core.people import alerts
from core.roles import Actor
from core.tokens import issuance
from core.tokens.issuance import Activation
from core.tokens.resend import APPLE, file_of
from core.vault import Vault

CLAIM = timedelta(minutes=5)  # at least; always twice the installer's hard deadline
FIRST_RETRY = timedelta(minutes=5)
LAST_RETRY = timedelta(hours=6)
UnitOfWork = Callable[[], AbstractContextManager[Session]]
log = logging.getLogger("mdmbot.installs")


@dataclass(frozen=True)
class InstallOutcome:
    """What one attempt did: installed, failed with a one-line reason, or skipped."""

    install_id: int
    server_name: str
    label: str
    requested_by: str
    installed: bool = False
    error: str | None = None
    attempts: int = 0
    skipped: str | None = None


def backoff(attempts: int) -> timedelta:
    """How long to wait after `attempts` failures: 5 minutes, doubling, at most 6 hours."""
    wait: timedelta = FIRST_RETRY * (2 ** min(max(attempts - 1, 0), 10))
    return min(wait, LAST_RETRY)


def request_install(
    session: Session, token_id: int, requested_by: str, now: datetime
) -> int | None:
    """Queue the install of a new active token if its server is connected; older ones give way."""
    token = session.get(Token, token_id)
    if token is None or connection_row(session, token.server_id) is None:
        return None
    session.execute(
        sa.update(TokenInstall)
        .where(
            col(TokenInstall.server_id) == token.server_id,
            col(TokenInstall.status) == "pending",
            col(TokenInstall.token_id) != token_id,
        )
        .values(status="replaced", next_attempt_at=None)
    )
    existing = session.exec(select(TokenInstall).where(TokenInstall.token_id == token_id)).first()
    if existing is not None:  # pushed again on request, or through a new connection
        existing.status, existing.next_attempt_at = "pending", now
        session.add(existing)
        return existing.id
    row = TokenInstall(
        token_id=token_id,
        server_id=token.server_id,
        requested_by=requested_by,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def push_active(session: Session, server: Server, requested_by: str, now: datetime) -> int:
    """Queue the install of the server's active token now (`token push`)."""
    token_id = session.exec(
        select(Token.id).where(Token.server_id == server.id, Token.status == TokenStatus.ACTIVE)
    ).first()
    if token_id is None:
        raise InstallError(f"“{server.name}” has no active token to install; issue one first.")
    install_id = request_install(session, token_id, requested_by, now)
    if install_id is None:
        raise InstallError(f"“{server.name}” is not connected to an MDM server.")
    return install_id


def claim_length(installer: Installer) -> timedelta:
    """How long a claim holds: past the installer's hard deadline, so no one pushes meanwhile."""
    return max(CLAIM, 2 * timedelta(seconds=installer.deadline))


def claim(
    session: Session, install_id: int, holder: str, now: datetime, hold: timedelta = CLAIM
) -> bool:
    """Claim a waiting install for `holder`; False when it is not waiting or someone holds it."""
    claimed = session.execute(
        sa.update(TokenInstall)
        .where(
            col(TokenInstall.id) == install_id,
            col(TokenInstall.status) == "pending",
            sa.or_(
                col(TokenInstall.claimed_until).is_(None), col(TokenInstall.claimed_until) < now
            ),
        )
        .values(claimed_by=holder, claimed_until=now + hold)
    )
    return bool(getattr(claimed, "rowcount", 0) == 1)


def due_installs(session: Session, now: datetime) -> list[int]:
    """Installs whose next attempt is due, oldest first."""
    return [
        install_id
        for install_id in session.exec(
            select(TokenInstall.id)
            .where(
                TokenInstall.status == "pending",
                col(TokenInstall.next_attempt_at) <= now,
            )
            .order_by(col(TokenInstall.next_attempt_at), col(TokenInstall.id))
        ).all()
        if install_id is not None
    ]


def _push_of(
    session: Session, vault: Vault, install: TokenInstall
) -> tuple[ConnectionSpec, TokenPush] | None:
    """The connection and token file to push, rebuilt from the stored credentials."""
    token = session.get(Token, install.token_id)
    server = session.get(Server, install.server_id)
    spec = connection_of(session, vault, install.server_id)
    if token is None or server is None or spec is None or token.status != TokenStatus.ACTIVE:
        return None
    filename, content = file_of(session, vault, token, server.name)
    new_key = _own_key_replaced(session, token)
    return spec, TokenPush(server.name, filename, content, new_key)


def _own_key_replaced(session: Session, token: Token) -> bool:
    """Whether the last token installed through the server's current connection had another
    consumer key (`token issue --new-consumer-key`): that token is the server's own, so NanoDEP
    may be told to replace it although it refuses a changed key otherwise."""
    row = connection_row(session, token.server_id)
    if row is None:
        return False
    previous = session.exec(
        select(Token.consumer_key)
        .join(TokenInstall, col(TokenInstall.token_id) == col(Token.id))
        .where(
            TokenInstall.server_id == token.server_id,
            TokenInstall.status == "installed",
            col(TokenInstall.installed_at) >= row.created_at,
            col(Token.id) != token.id,
        )
        .order_by(col(TokenInstall.installed_at).desc(), col(TokenInstall.id).desc())
    ).first()
    return previous is not None and previous != token.consumer_key


def attempt(
    uow: UnitOfWork,
    vault: Vault,
    installer: Installer,
    install_id: int,
    holder: str,
    clock: Callable[[], datetime],
) -> InstallOutcome | None:
    """Claim, push and record one install; None when another holder has it or it is settled."""
    with uow() as session:
        if not claim(session, install_id, holder, clock(), claim_length(installer)):
            return None
        install = session.get(TokenInstall, install_id)
        assert install is not None
        server = session.get(Server, install.server_id)
        name = server.name if server is not None else "?"
        prepared = _push_of(session, vault, install)
        if prepared is None:
            install.status, install.claimed_until = "replaced", None
            session.add(install)
            return InstallOutcome(install_id, name, "", install.requested_by, skipped="replaced")
        spec, push = prepared
    error: str | None = None
    answer = Installed()
    try:
        answer = installer.install(spec, push)
    except InstallError as exc:
        error = exc.message
    except Exception as exc:  # a bug must not stop the sweep, nor hide that the token is active
        reference = uuid.uuid4().hex[:10]
        log.error("install failed ref=%s: %s", reference, type(exc).__name__, exc_info=exc)
        error = f"unexpected error (reference {reference})."
    with uow() as session:
        return record(session, install_id, holder, clock(), spec, error, answer)


def record(
    session: Session,
    install_id: int,
    holder: str,
    now: datetime,
    spec: ConnectionSpec,
    error: str | None,
    answer: Installed,
) -> InstallOutcome:
    """Record the holder's attempt: installed, or failed and due again after the backoff."""
    install = session.get(TokenInstall, install_id)
    server = session.get(Server, install.server_id) if install is not None else None
    assert install is not None and server is not None
    outcome = InstallOutcome(install_id, server.name, spec.label(), install.requested_by)
    if install.claimed_by != holder or install.status != "pending":
        return InstallOutcome(**{**outcome.__dict__, "skipped": "claimed elsewhere"})
    row = connection_row(session, install.server_id)
    install.attempts += 1
    install.last_attempt_at, install.claimed_until = now, None
    if error is None:
        install.status, install.installed_at, install.last_error = "installed", now, None
        install.next_attempt_at = None
        alerts.edit_again(session, install.server_id)
        _expiry_from(session, install.token_id, answer)
    else:
        install.last_error = error  # a refused API key is not retried: a person must fix it
        install.next_attempt_at = now + backoff(install.attempts) if retry_helps(error) else None
    if row is not None:
        if error is None:
            row.last_install_at, row.last_install_error = now, None
            row.remote_id = answer.remote_id or row.remote_id
        else:
            row.last_install_error = failure_text(install.attempts, error)
        session.add(row)
    session.add(install)
    return InstallOutcome(
        install_id,
        server.name,
        spec.label(),
        install.requested_by,
        installed=error is None,
        error=error,
        attempts=install.attempts,
    )


def _expiry_from(session: Session, token_id: int, answer: Installed) -> None:
    """A token taken in from Apple expires when the MDM server read it would (its final word)."""
    token = session.get(Token, token_id)
    if token is None or token.source != APPLE or answer.expires_at is None:
        return
    if token.expires_at != answer.expires_at:
        token.expires_at, token.next_alert_at = answer.expires_at, None  # the sweep looks again
        session.add(token)


def failure_text(attempts: int, error: str) -> str:
    """`install failed 3 times: 401 from NanoDEP — check the API key`."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return f"install failed {times}: {error}"


def install_id_of(session: Session, token_id: int | None) -> int | None:
    """The id of a token's install record, if it goes through a connection."""
    return session.exec(select(TokenInstall.id).where(TokenInstall.token_id == token_id)).first()


def issue_through(
    session: Session, actor: Actor, token_id: int, spec: ConnectionSpec, now: datetime
) -> Activation:
    """Deliver a prepared token to the MDM server: mark it, activate it, queue its install.

    TokenConflict when someone else replaced the token first (this one is then discarded).
    """
    refusal = issuance.start_delivery(session, actor, token_id, f"mdm:{spec.label()}", now)
    if refusal is not None:
        raise TokenConflict(refusal)
    activation = issuance.activate_token(session, actor, token_id, now)
    request_install(session, token_id, actor.user_id, now)
    return activation
