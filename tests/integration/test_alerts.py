"""Expiry alert sweeps over a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import db
from core.devices.unlink import remove_server
from core.models import AlertDelivery, Token
from core.people.alerts import claim_due_alerts, mark_failed, mark_sent, preview_due_alerts
from core.people.persons import ensure_person, grant_role
from core.roles import Actor, Role
from core.tokens.issuance import activate_token, issue_token
from core.tokens.servers import add_server, find_server
from core.vault import Vault
from tests import certs
from tests.conftest import NOW

DAYS = (60, 30, 14, 7, 3, 1)
D = timedelta(days=1)
ROOT = Actor("root", operator=True)


def make_token(
    session: Session, vault: Vault, name: str, when: datetime = NOW, who: str = "U0ADMIN"
) -> Token:
    """Link server `name` with an active token downloaded by `who` at `when`."""
    grant_role(session, ROOT, who, Role.SITE_MANAGER, when)
    issued = add_server(session, vault, Actor(who), name=name,
                        certificate=certs.self_signed_rsa().pem, release_devices=True, now=when)
    activate_token(session, Actor(who), issued.token_id, when)
    token = session.get(Token, issued.token_id)
    assert token is not None
    return token


def sweep(engine: sa.Engine, now: datetime, **kw: Any) -> list[tuple[int, int, int]]:
    """One sweep in its own unit of work: (delivery, token, threshold) claimed."""
    with db.unit_of_work(engine) as s:
        alerts = claim_due_alerts(s, now, DAYS, **kw)
        return [(a.delivery_id, a.token_id, a.threshold) for a in alerts]


def sweep_and_send(engine: sa.Engine, now: datetime) -> list[int]:
    """One sweep whose alerts are all posted: the thresholds sent."""
    claimed = sweep(engine, now)
    with db.unit_of_work(engine) as s:
        for delivery_id, _, _ in claimed:
            mark_sent(s, delivery_id, channel="C0ALERTS", ts=f"{delivery_id}.0", now=now)
    return [threshold for _, _, threshold in claimed]


def deliveries(engine: sa.Engine) -> list[AlertDelivery]:
    with db.unit_of_work(engine) as s:
        return list(s.exec(select(AlertDelivery).order_by(col(AlertDelivery.id))).all())


def test_due_alert_describes_the_token(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        ensure_person(s, "U0ADMIN", NOW, name="Ada Admin")
        token = make_token(s, vault, "Jamf Pro")
    with db.unit_of_work(engine) as s:
        [alert] = claim_due_alerts(s, token.expires_at - 6 * D, DAYS)
    assert alert.delivery_id > 0 and alert.token_id == token.id
    assert (alert.server_name, alert.threshold) == ("Jamf Pro", 7)
    assert alert.expires_at == token.expires_at
    assert (alert.downloaded_by, alert.downloaded_by_name) == ("U0ADMIN", "Ada Admin")
    assert alert.issued_at == token.issued_at
    [row] = deliveries(engine)
    assert (row.status, row.threshold, row.attempts, row.claimed_at) == (
        "pending", 7, 1, token.expires_at - 6 * D)


def test_sweeping_twice_at_the_same_time_claims_once(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Fleet")
    at = token.expires_at - 30 * D
    assert [t for _, _, t in sweep(engine, at)] == [30]
    assert sweep(engine, at) == []
    assert sweep(engine, at + timedelta(minutes=10)) == []  # pending, not yet stale
    assert len(deliveries(engine)) == 1


def test_daily_sweeps_over_last_70_days_send_seven_alerts(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Mosyle")
    updates: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE TOKEN"):
            updates.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    sent: list[int] = []
    now = token.expires_at - 70 * D + timedelta(hours=3)
    while now <= token.expires_at + 5 * D:
        with db.unit_of_work(engine) as s:
            claimed = claim_due_alerts(s, now, DAYS)
        with db.unit_of_work(engine) as s:
            for alert in claimed:
                mark_sent(s, alert.delivery_id, channel="C0ALERTS", ts=f"{len(sent)}.0", now=now)
                sent.append(alert.threshold)
        now += D
    sa.event.remove(engine, "before_cursor_execute", count)
    assert sent == [60, 30, 14, 7, 3, 1, 0]
    assert len(updates) == 7  # the token is examined once per reminder, never more
    assert {d.status for d in deliveries(engine)} == {"sent"}


def test_late_first_sweep_sends_only_the_most_urgent(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Kandji")
    expires = token.expires_at
    assert sweep_and_send(engine, expires - 2 * D) == [3]
    assert sweep_and_send(engine, expires - 2 * D + timedelta(hours=12)) == []
    assert sweep_and_send(engine, expires - D + timedelta(hours=1)) == [1]
    assert sweep_and_send(engine, expires - timedelta(hours=1)) == []
    assert sweep_and_send(engine, expires + timedelta(days=3)) == [0]
    assert sweep_and_send(engine, expires + timedelta(days=30)) == []
    assert [d.threshold for d in deliveries(engine)] == [3, 1, 0]


def test_superseded_and_revoked_tokens_never_alert(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        old = make_token(s, vault, "Old")
        make_token(s, vault, "Gone")
    later = NOW + 200 * D
    with db.unit_of_work(engine) as s:
        new = issue_token(s, vault, Actor("U0ADMIN"), find_server(s, "Old"), later)
        activate_token(s, Actor("U0ADMIN"), new.token_id, later)
        remove_server(s, Actor("U0ADMIN"), "Gone", later)
    for day in range(0, 70, 3):
        assert sweep(engine, old.expires_at - 65 * D + day * D) == []
    assert sweep(engine, old.expires_at + 10 * D) == []
    assert deliveries(engine) == []
    assert [t for _, t, _ in sweep(engine, new.expires_at)] == [new.token_id]


def test_pending_token_never_alerts(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Pending")
        issue_token(s, vault, Actor("U0ADMIN"), find_server(s, "Pending"), NOW + D)
    assert [t for _, t, _ in sweep(engine, token.expires_at + 5 * D)] == [token.id]


def test_failed_delivery_is_reclaimed_next_sweep(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Retry")
    at = token.expires_at - 7 * D
    [(delivery_id, _, threshold)] = sweep(engine, at)
    with db.unit_of_work(engine) as s:
        mark_failed(s, delivery_id, "ratelimited (429)", at)
    assert sweep(engine, at + timedelta(hours=1)) == [(delivery_id, token.id, 7)]
    assert sweep(engine, at + timedelta(hours=1)) == []  # pending again, not yet stale
    with db.unit_of_work(engine) as s:
        mark_sent(s, delivery_id, channel="C1", ts="1.2", now=at + timedelta(hours=1))
    [row] = deliveries(engine)
    assert (row.status, row.attempts, row.threshold, row.ts) == ("sent", 2, threshold, "1.2")
    assert sweep(engine, at + timedelta(hours=5)) == []


def test_stale_pending_delivery_is_reclaimed(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Crash")
    at = token.expires_at - 14 * D
    [(delivery_id, _, _)] = sweep(engine, at)  # then the process dies before posting
    assert sweep(engine, at + timedelta(minutes=10)) == []
    assert sweep(engine, at + timedelta(minutes=16)) == [(delivery_id, token.id, 14)]
    assert sweep(engine, at + timedelta(minutes=17)) == []
    assert sweep(engine, at + timedelta(minutes=40), stale_after=timedelta(minutes=20)) == [
        (delivery_id, token.id, 14)]
    assert deliveries(engine)[0].attempts == 3


def test_failed_delivery_of_replaced_token_is_cancelled(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Replaced")
    at = token.expires_at - 3 * D
    [(delivery_id, _, _)] = sweep(engine, at)
    with db.unit_of_work(engine) as s:
        mark_failed(s, delivery_id, "HTTP 503", at)
        new = issue_token(s, vault, Actor("U0ADMIN"), find_server(s, "Replaced"), at)
        activate_token(s, Actor("U0ADMIN"), new.token_id, at)
    assert sweep(engine, at + D) == []
    assert deliveries(engine)[0].status == "cancelled"


def test_failed_alert_overtaken_by_a_more_urgent_one_is_dropped(
    engine: sa.Engine, vault: Vault
) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Overtaken")
    [(first, _, _)] = sweep(engine, token.expires_at - 7 * D)
    with db.unit_of_work(engine) as s:
        mark_failed(s, first, "HTTP 500", token.expires_at - 7 * D)
    assert [t for _, _, t in sweep(engine, token.expires_at - 2 * D)] == [3]
    assert [(d.threshold, d.status) for d in deliveries(engine)] == [
        (7, "cancelled"), (3, "pending")]


def test_preview_claims_and_writes_nothing(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Preview")
    with db.unit_of_work(engine) as s:
        alerts = preview_due_alerts(s, token.expires_at - 20 * D, DAYS)
        assert [(a.delivery_id, a.threshold, a.server_name) for a in alerts] == [(0, 30, "Preview")]
        assert preview_due_alerts(s, token.expires_at - 61 * D, DAYS) == []
    assert deliveries(engine) == []
    with db.unit_of_work(engine) as s:
        stored = s.get(Token, token.id)
        assert stored is not None and stored.next_alert_at is None


def test_limit_leaves_the_rest_for_the_next_sweep(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        tokens = [make_token(s, vault, f"Limit {i}") for i in range(5)]
    at = tokens[0].expires_at - D
    assert len(sweep(engine, at, limit=3)) == 3
    assert len(sweep(engine, at, limit=3)) == 2
    assert sweep(engine, at) == []


@pytest.mark.parametrize("phase", ["new", "retry"])
def test_racing_sweeps_claim_each_alert_once(engine: sa.Engine, vault: Vault, phase: str) -> None:
    with db.unit_of_work(engine) as s:
        tokens = [make_token(s, vault, f"Race {i}") for i in range(10)]
    at = tokens[-1].expires_at - 5 * D
    if phase == "retry":
        claimed = sweep(engine, at)
        assert len(claimed) == 10
        with db.unit_of_work(engine) as s:
            for delivery_id, _, _ in claimed:
                mark_failed(s, delivery_id, "HTTP 502", at)
    barrier = threading.Barrier(2)
    results: list[list[tuple[int, int, int]]] = [[], []]
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            with db.unit_of_work(engine) as s:
                barrier.wait(timeout=30)
                results[slot] = [(a.delivery_id, a.token_id, a.threshold)
                                 for a in claim_due_alerts(s, at + timedelta(hours=1), DAYS)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    both = results[0] + results[1]
    assert len(both) == 10
    assert sorted(t for _, t, _ in both) == sorted(t.id or 0 for t in tokens)
    assert {th for _, _, th in both} == {7}
    rows = deliveries(engine)
    assert len(rows) == 10
    assert {r.attempts for r in rows} == {1 if phase == "new" else 2}
