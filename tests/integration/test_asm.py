"""core/asm against the database: the assertion's time rules to the second, access tokens that
expire and die with their account, the per-device log of an unassignment, and the audit trail."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.asm import accounts, activities, oauth
from core.asm.inventory import server_key
from core.asm.oauth import TokenRefused
from core.devices import csv_import, inventory
from core.errors import NotFound
from core.models import AuditEvent
from core.vault import Vault
from tests.asm_support import DAY, Account
from tests.conftest import NOW
from tests.devices_support import OPERATOR, add_server, csv_of, serial

OWN = "https://mdmbot.example/auth/oauth2/v2/token"


def _account(session: Session, scope: str = "school") -> Account:
    made = accounts.create_account(session, OPERATOR, "Script", scope, NOW)
    view = made.account
    return Account(view.client_id, view.key_id, made.private_key_pem, view.scope)


def test_assertion_lifetimes_to_the_second(session: Session) -> None:
    account = _account(session)
    iat = int(NOW.timestamp())
    longest = account.assertion(NOW, exp=iat + 180 * DAY)
    issued = oauth.issue_access_token(session, account.form(longest), OWN, NOW)
    assert (issued.expires_in, issued.scope) == (3600, "school.api")
    too_long = account.assertion(NOW, exp=iat + 180 * DAY + 1)
    with pytest.raises(TokenRefused, match="180 days"):
        oauth.issue_access_token(session, account.form(too_long), OWN, NOW)
    ending = account.assertion(NOW, iat=iat - 60, exp=iat)
    with pytest.raises(TokenRefused, match="expired"):
        oauth.issue_access_token(session, account.form(ending), OWN, NOW)
    own = account.assertion(NOW, aud=OWN)
    assert oauth.issue_access_token(session, account.form(own), OWN, NOW).access_token


def test_access_tokens_expire_and_die_with_their_account(session: Session) -> None:
    account = _account(session)
    issued = oauth.issue_access_token(session, account.form(account.assertion(NOW)), OWN, NOW)
    connection = session.connection()
    assert oauth.caller_of(connection, issued.access_token, NOW) is not None
    stored = session.exec(sa.text("SELECT token_hash FROM apiaccesstoken")).all()  # type: ignore[call-overload]
    assert [row[0] for row in stored] == [oauth.digest(issued.access_token)]  # never the token
    later = NOW + timedelta(seconds=3600)
    assert oauth.caller_of(connection, issued.access_token, later) is None
    fresh = oauth.issue_access_token(session, account.form(account.assertion(later)), OWN, later)
    assert len(session.exec(sa.text("SELECT 1 FROM apiaccesstoken")).all()) == 1  # type: ignore[call-overload]
    accounts.revoke_account(session, OPERATOR, account.client_id, later)
    assert oauth.caller_of(session.connection(), fresh.access_token, later) is None


def test_unassigning_from_the_wrong_server_is_a_failure_in_the_log(
    session: Session, vault: Vault
) -> None:
    jamf, mosyle = (
        add_server(session, vault, "Jamf", NOW),
        add_server(session, vault, "Mosyle", NOW),
    )
    csv_import.import_devices(session, OPERATOR, csv_of([serial(i) for i in range(3)]), NOW)
    inventory.assign_devices(session, OPERATOR, "Jamf", [serial(0), serial(1)], NOW)
    inventory.assign_devices(session, OPERATOR, "Mosyle", [serial(2)], NOW)
    account = _account(session)
    issued = oauth.issue_access_token(session, account.form(account.assertion(NOW)), OWN, NOW)
    caller = oauth.caller_of(session.connection(), issued.access_token, NOW)
    assert caller is not None and caller.client_id == account.client_id
    wanted = [serial(0), serial(2), "nope"]
    view = activities.run_activity(
        session, caller, activities.UNASSIGN, server_key(jamf), wanted, NOW
    )
    assert view.sub_status == "COMPLETED_WITH_FAILURE"
    _, log = activities.activity_log(session, view.id, NOW)
    rows = {
        r["Serial Number"]: (r["Result"], r["Details"]) for r in csv.DictReader(io.StringIO(log))
    }
    assert rows == {
        serial(0): ("SUCCESS", "unassigned from Jamf"),
        serial(2): ("FAILED", "not assigned to Jamf"),
        "nope": ("FAILED", "not a serial number"),
    }
    assert inventory.show_device(session, serial(2)).server == "Mosyle" and mosyle
    audit = session.exec(select(AuditEvent.actor, AuditEvent.action)).all()
    assert (f"api:{account.client_id}", "devices.unassign") in audit
    assert ("operator:alice", "api-account.create") in audit
    with pytest.raises(NotFound, match="no resource of type 'orgDeviceActivities'"):
        activities.get_activity(session, view.id, NOW + timedelta(days=31))
