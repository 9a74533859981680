"""One state per server (core.connections.server_state): each state, its facts and urgency."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.connections.server_state import State, Urgency, by_urgency, retry_helps, state_of
from core.tokens.servers import InstallFacts, ServerView

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ISSUED = NOW - timedelta(minutes=10)
NANODEP = "NanoDEP (school1)"


def view(**changes: object) -> ServerView:
    """school1 with a token issued ten minutes ago, expiring in a year, not used yet."""
    base = ServerView(
        id=1,
        name="school1",
        release_devices=True,
        created_by="U1",
        created_at=NOW - timedelta(days=400),
        certificate_subject="CN=x",
        certificate_not_after=NOW + timedelta(days=700),
        token_id=7,
        token_issued_at=ISSUED,
        token_expires_at=ISSUED + timedelta(days=365),
        downloaded_by="UALEX",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def connected(status: str | None, **install: object) -> dict[str, object]:
    return {"mdm_label": NANODEP, "install": InstallFacts(status, **install)}  # type: ignore[arg-type]


def test_no_token_and_expired() -> None:
    none = state_of(view(token_id=None, token_expires_at=None, token_issued_at=None), NOW)
    assert (none.state, none.urgency) == (State.NO_TOKEN, Urgency.SOON)
    gone = view(token_expires_at=NOW - timedelta(hours=1), token_installed_at=ISSUED)
    expired = state_of(gone, NOW)
    assert (expired.state, expired.urgency, expired.days_left) == (State.EXPIRED, Urgency.NOW, 0)


def test_expiring_soon_whether_used_or_not() -> None:
    unused = state_of(view(token_expires_at=NOW + timedelta(days=10)), NOW)
    assert (unused.state, unused.urgency) == (State.EXPIRES_SOON, Urgency.SOON)


def test_in_use_then_expiring_soon_then_red_in_the_last_week() -> None:
    used = view(token_installed_at=ISSUED, token_last_used_at=NOW)
    fine = state_of(used, NOW)
    assert (fine.state, fine.urgency, fine.since) == (State.IN_USE, Urgency.FINE, ISSUED)
    end = ISSUED + timedelta(days=365)
    soon = state_of(used, end - timedelta(days=29, hours=1))
    assert (soon.state, soon.urgency, soon.days_left) == (State.EXPIRES_SOON, Urgency.SOON, 30)
    week = state_of(used, end - timedelta(days=6))
    assert (week.state, week.urgency, week.days_left) == (State.EXPIRES_SOON, Urgency.NOW, 6)


def test_a_file_waiting_for_upload_turns_red_after_a_day_only_when_it_replaced_one() -> None:
    first = state_of(view(), NOW)
    assert (first.state, first.urgency, first.holder) == (
        State.WAITING_UPLOAD, Urgency.SOON, "UALEX"
    )
    assert first.file_sent and not first.connected and not first.replaced
    assert state_of(view(), NOW + timedelta(days=3)).urgency == Urgency.SOON, "nothing broke"
    renewed = view(replaced_at=ISSUED)
    assert state_of(renewed, NOW).urgency == Urgency.SOON, "ten minutes: not red"
    assert state_of(renewed, ISSUED + timedelta(days=1)).urgency == Urgency.NOW, "a day: red"


def test_installed_through_a_connection_is_never_an_old_token() -> None:
    installed = view(replaced_at=ISSUED, **connected("installed", attempts=1, installed_at=ISSUED))
    state = state_of(installed, NOW)
    assert (state.state, state.urgency, state.label) == (State.INSTALLED, Urgency.WAIT, NANODEP)
    assert state_of(installed, NOW + timedelta(days=2)).urgency == Urgency.SOON
    pending = state_of(view(**connected("pending")), NOW)
    assert (pending.state, pending.urgency) == (State.INSTALLING, Urgency.WAIT)


def test_an_old_token_presented_after_the_install_is_reported() -> None:
    before = view(replaced_at=ISSUED, old_presented_at=ISSUED + timedelta(minutes=1))
    assert state_of(before, NOW).state == State.OLD_TOKEN
    pushed = ISSUED + timedelta(minutes=5)
    installed = connected("installed", installed_at=pushed)
    earlier = state_of(replace(before, **installed), NOW)  # type: ignore[arg-type]
    assert earlier.state == State.INSTALLED, "presented before the install: not a problem"
    later = replace(before, old_presented_at=NOW, **installed)  # type: ignore[arg-type]
    still = state_of(later, NOW + timedelta(hours=2))
    assert (still.state, still.urgency, still.presented_at) == (State.OLD_TOKEN, Urgency.NOW, NOW)


@pytest.mark.parametrize(
    ("error", "helps"),
    [
        ("500 from NanoDEP (school1): database is locked.", True),
        ("Cannot reach NanoDEP (school1) at 127.0.0.1: Connection refused.", True),
        ("401 from NanoDEP (school1) — check the API key.", False),
        ("403 from Fleet (127.0.0.1) — check the API key.", False),
    ],
)
def test_a_failing_install_says_whether_retrying_can_help(error: str, helps: bool) -> None:
    retry = NOW + timedelta(minutes=5)
    install = connected("pending", attempts=2, error=error, next_try=retry)
    failing = view(replaced_at=ISSUED, **install)
    state = state_of(failing, NOW)
    assert (state.state, state.error, state.attempts, state.retry_helps) == (
        State.INSTALL_FAILING, error, 2, helps
    )
    assert retry_helps(error) is helps
    assert state.next_try == (retry if helps else None), "no next try when only a person can fix it"
    assert state.urgency == (Urgency.SOON if helps else Urgency.NOW)
    assert state_of(failing, ISSUED + timedelta(hours=2)).urgency == Urgency.NOW


def test_automatic_renewals_and_order() -> None:
    assert state_of(view(downloaded_by="mdmbot"), NOW).automatic
    views = [
        view(id=1, name="fine", token_installed_at=ISSUED),
        view(id=2, name="none", token_id=None, token_expires_at=None),
        view(id=3, name="gone", token_expires_at=NOW - timedelta(days=1)),
        view(id=4, name="upload"),
    ]
    views.append(view(id=5, name="renewed", replaced_at=ISSUED))
    views.append(view(id=6, name="soon", token_expires_at=NOW + timedelta(days=20)))
    assert [v.name for v, _ in by_urgency(views, NOW)] == [
        "gone", "renewed", "soon", "upload", "none", "fine"
    ], "red, then an old token stopped, then soonest expiry"
