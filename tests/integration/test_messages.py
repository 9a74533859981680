"""Which posted messages must be edited after a token is replaced (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from core import db
from core.devices.unlink import remove_server
from core.people import rotation
from core.people.alerts import mark_edited, stale_alerts
from core.roles import Actor
from core.tokens.issuance import activate_token, issue_token
from core.tokens.servers import find_server
from core.vault import Vault
from tests.conftest import NOW
from tests.integration.test_alerts import ROOT, D, make_token, sweep_and_send


def test_renewal_marks_every_posted_alert_once(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Jamf Pro")
        make_token(s, vault, "Mosyle")
    assert sweep_and_send(engine, token.expires_at - 59 * D) == [60, 60]
    assert sweep_and_send(engine, token.expires_at - 29 * D) == [30, 30]
    with db.unit_of_work(engine) as s:
        assert stale_alerts(s) == [], "nothing replaced yet"
        issued = issue_token(s, vault, Actor("U0ADMIN"), find_server(s, "Jamf Pro"), NOW + D)
        activate_token(s, Actor("U0ADMIN"), issued.token_id, NOW + D)
    with db.unit_of_work(engine) as s:
        stale = stale_alerts(s)
    assert [(a.server_name, a.by, a.reason) for a in stale] == [
        ("Jamf Pro", "U0ADMIN", "new token")
    ] * 2, "both alerts of the replaced token, none of Mosyle's"
    assert {a.new_expires_at for a in stale} == {issued.expires_at}
    assert {a.expires_at for a in stale} == {token.expires_at}
    with db.unit_of_work(engine) as s:
        mark_edited(s, stale[0].delivery_id, NOW + D)
    with db.unit_of_work(engine) as s:
        assert [a.delivery_id for a in stale_alerts(s)] == [stale[1].delivery_id]


def test_removal_marks_alerts_with_who_removed(engine: sa.Engine, vault: Vault) -> None:
    with db.unit_of_work(engine) as s:
        token = make_token(s, vault, "Jamf Pro")
    sweep_and_send(engine, token.expires_at - 6 * D)
    with db.unit_of_work(engine) as s:
        remove_server(s, ROOT, "Jamf Pro", NOW + D)
    with db.unit_of_work(engine) as s:
        [alert] = stale_alerts(s)
    assert (alert.reason, alert.by, alert.new_expires_at) == (
        "server removed",
        "operator:root",
        None,
    )


def test_a_ticked_checklist_stays_marked_until_edited_as_of_the_latest_change(
    engine: sa.Engine, vault: Vault
) -> None:
    with db.unit_of_work(engine) as s:
        make_token(s, vault, "Jamf Pro", who="U0LEAVER")
        make_token(s, vault, "Mosyle", who="U0LEAVER")
        case = rotation.open_case(s, ROOT, "U0LEAVER", rotation.DEPARTURE, NOW)
        assert case is not None
        rotation.record_case_message(s, case.id, "C0ALERTS", "1.0", NOW)
    with db.unit_of_work(engine) as s:
        assert rotation.stale_cases(s) == []
        issued = issue_token(s, vault, ROOT, find_server(s, "Jamf Pro"), NOW + D)
        activate_token(s, ROOT, issued.token_id, NOW + D)
    with db.unit_of_work(engine) as s:
        assert rotation.stale_cases(s) == [case.id]
        seen = rotation.get_case(s, case.id)
    with db.unit_of_work(engine) as s:  # another renewal lands before the edit is recorded
        issued = issue_token(s, vault, ROOT, find_server(s, "Mosyle"), NOW + 2 * D)
        activate_token(s, ROOT, issued.token_id, NOW + 2 * D)
    with db.unit_of_work(engine) as s:
        rotation.mark_case_edited(s, seen, NOW + 2 * D)
    with db.unit_of_work(engine) as s:
        assert rotation.stale_cases(s) == [case.id], "the later change still needs an edit"
        latest = rotation.get_case(s, case.id)
        assert latest.status == "open", "done only once the MDM servers use the new tokens"
        rotation.mark_case_edited(s, latest, NOW + 2 * D)
    with db.unit_of_work(engine) as s:
        assert rotation.stale_cases(s) == []
