"""Apple mode's sync against a fake Apple: servers and devices come in, renames and removals
follow, and every fault (401, 429, 5xx, a cut page, a revoked account) leaves local state as it
was, with one alert per kind. Assignments are Apple's activities: polled to completion, a failure
reported, an activity still running said so; only a completed one moves devices here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from bot.apple.client import AppleClient
from bot.apple.http import Transport
from bot.context import AppContext
from core import db
from core.apple import devices as apple_devices
from core.apple import status
from core.apple import sync as apple_sync
from core.apple.api import AppleMalformed, AppleRefused, AppleRejected, AppleUnreachable
from core.devices.unlink import remove_server
from core.errors import InvalidInput
from core.models import Certificate, Device, Server, Token
from core.roles import Actor
from core.settings import Settings
from core.tokens.servers import edit_server
from tests.fakeapple import FakeApple

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JAMF, MOSYLE = "1F97349736CF4614A94F624E705841AD", "2A87349736CF4614A94F624E705841BE"


@pytest.fixture
def apple() -> Iterator[FakeApple]:
    fake = FakeApple()
    fake.add_server(JAMF, "Jamf Pro", lastConnectedDateTime="2026-12-01T08:14:23Z",
                    enableMdmDisownFlag=False)  # fmt: skip
    fake.add_server(MOSYLE, "Mosyle")
    for index in range(5):
        fake.add_device(f"DMQX{index:04d}AB", JAMF if index < 3 else None)
    with fake.running():
        yield fake


@pytest.fixture
def ctx(apple: FakeApple, database_url: str, tmp_path: Path) -> Iterator[AppContext]:
    settings = Settings(
        mdmbot_database_url=database_url, mdmbot_data_dir=tmp_path, mdmbot_secret_key="k" * 40,
        _env_file=None,  # type: ignore[call-arg]
        **apple.settings(apple.write_key(tmp_path)),
    )  # fmt: skip
    context = AppContext(settings, clock=lambda: NOW)
    yield context
    context.engine.dispose()


class Waits:
    """The transport's sleep: recorded, not slept (the deadline still counts)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def _client(ctx: AppContext, waits: Waits) -> AppleClient:
    return AppleClient(ctx.settings, Transport(sleep=waits))


def _sync(ctx: AppContext, waits: Waits | None = None) -> apple_sync.SyncResult:
    client = _client(ctx, waits or Waits())
    return apple_sync.sync(lambda: client, ctx.unit_of_work, NOW)


def _local(ctx: AppContext) -> dict[str, Any]:
    with ctx.unit_of_work(readonly=True) as session:
        servers = {s.apple_id: (s.name, s.removed_at is None) for s in session.exec(select(Server))}
        names = {s.id: s.apple_id for s in session.exec(select(Server))}
        devices = {d.serial_number: names.get(d.server_id) for d in session.exec(select(Device))}
    return {"servers": servers, "devices": devices}


def test_the_sync_brings_servers_and_devices_in(ctx: AppContext, apple: FakeApple) -> None:
    first = _sync(ctx)
    assert (first.servers, first.devices) == (2, 5)
    local = _local(ctx)
    assert local["servers"] == {JAMF: ("Jamf Pro", True), MOSYLE: ("Mosyle", True)}
    assert local["devices"]["DMQX0000AB"] == JAMF and local["devices"]["DMQX0004AB"] is None
    with ctx.unit_of_work(readonly=True) as session:
        jamf = session.exec(select(Server).where(Server.apple_id == JAMF)).one()
        assert jamf.apple_last_connected_at == datetime(2026, 12, 1, 8, 14, 23, tzinfo=UTC)
        assert jamf.release_devices is False
    assert apple.token_requests == 1, "one access token serves every page"
    assert _sync(ctx).changes == 0, "nothing changed at Apple: nothing changes here"

    # Apple renames one server, drops the other, moves a device and adds one.
    apple.servers[JAMF]["serverName"] = "Jamf Cloud"
    del apple.servers[MOSYLE]
    apple.devices["DMQX0004AB"]["server"] = JAMF
    apple.add_device("NEWD0001XY", JAMF, family="Mac")
    after = _sync(ctx)
    assert (after.servers, after.devices, after.changes) == (1, 6, 4)
    local = _local(ctx)
    assert local["servers"] == {JAMF: ("Jamf Cloud", True), MOSYLE: ("Mosyle", False)}
    assert local["devices"]["DMQX0004AB"] == JAMF and local["devices"]["NEWD0001XY"] == JAMF


def test_a_local_server_is_linked_by_name(ctx: AppContext, apple: FakeApple) -> None:
    with ctx.unit_of_work() as session:
        session.add(Server(name="mosyle", normalized_name="mosyle", created_by="U1",
                           created_at=NOW))  # fmt: skip
    _sync(ctx)
    with ctx.unit_of_work(readonly=True) as session:
        linked = session.exec(select(Server).where(Server.apple_id == MOSYLE)).one()
        count = len(session.exec(select(Server)).all())
        assert (linked.name, linked.created_by, count) == ("Mosyle", "U1", 2)


def test_401_then_success_takes_a_fresh_token(ctx: AppContext, apple: FakeApple) -> None:
    apple.fault("/v1/orgDevices", expire_tokens=True)
    assert _sync(ctx).devices == 5
    assert apple.token_requests == 2


def test_429_waits_for_retry_after(ctx: AppContext, apple: FakeApple) -> None:
    apple.fault("/v1/mdmServers", status=429, headers={"Retry-After": "7"})
    waits = Waits()
    assert _sync(ctx, waits).servers == 2
    assert waits.seconds == [7.0]


def test_5xx_backs_off_a_bounded_number_of_times(ctx: AppContext, apple: FakeApple) -> None:
    apple.fault("/v1/orgDevices", status=503)
    apple.fault("/v1/orgDevices", status=502)
    waits = Waits()
    assert _sync(ctx, waits).devices == 5
    assert waits.seconds == [0.5, 1.0]


def _faults() -> list[tuple[str, type[Exception]]]:
    return [("5xx", AppleUnreachable), ("cut", AppleUnreachable), ("revoked", AppleRefused),
            ("malformed", AppleMalformed)]  # fmt: skip


@pytest.mark.parametrize(("fault", "error"), _faults())
def test_a_failed_sync_changes_nothing(
    ctx: AppContext, apple: FakeApple, fault: str, error: type[Exception]
) -> None:
    _sync(ctx)
    with ctx.unit_of_work() as session:
        server = session.exec(select(Server).where(Server.apple_id == MOSYLE)).one()
        cert = Certificate(server_id=server.id, pem="-", fingerprint_sha256="0" * 64, subject="-",
                           not_after=NOW, uploaded_by="U1", uploaded_at=NOW)  # fmt: skip
        session.add(cert)
        session.flush()
        session.add(Token(server_id=server.id, certificate_id=cert.id, consumer_key="CK",
                          secrets="x", issued_at=NOW, expires_at=NOW, downloaded_by="U1",
                          source="apple"))  # fmt: skip
    before = _local(ctx)
    del apple.servers[MOSYLE]  # what a sync would apply, had it read everything
    apple.devices["DMQX0004AB"]["server"] = JAMF
    for attempt in range(2):  # the same failure twice: one alert
        if fault == "5xx":
            for _ in range(6):
                apple.fault("/v1/orgDevices", status=500)
        elif fault == "cut":
            for _ in range(6):
                apple.fault("/v1/orgDevices", cut=True)
        elif fault == "revoked":
            apple.revoked = True
            apple.tokens.clear()
        else:
            apple.fault("/v1/orgDevices", status=200)
        client = _client(ctx, Waits())
        outcome = apple_sync.run_sync(lambda c=client: c, ctx.unit_of_work, NOW)
        assert isinstance(outcome.error, error) and outcome.result is None
        assert outcome.alert is (attempt == 0)
        assert _local(ctx) == before, "nothing local lost or changed"
    with ctx.unit_of_work(readonly=True) as session:
        health = status.health(session)
        assert session.exec(select(Token)).one().source == "apple"
    assert health.failing_kind == outcome.error.kind and health.failing_message
    apple.revoked, apple.faults = False, []
    recovered = apple_sync.run_sync(lambda: _client(ctx, Waits()), ctx.unit_of_work, NOW)
    assert recovered.recovered and recovered.result and recovered.result.servers == 1
    with ctx.unit_of_work(readonly=True) as session:
        assert status.health(session).failing_kind is None


def test_a_different_failure_is_alerted_too(ctx: AppContext, apple: FakeApple) -> None:
    apple.revoked = True
    first = apple_sync.run_sync(lambda: _client(ctx, Waits()), ctx.unit_of_work, NOW)
    apple.revoked = False
    for _ in range(6):
        apple.fault("/v1/mdmServers", status=503)
    second = apple_sync.run_sync(lambda: _client(ctx, Waits()), ctx.unit_of_work, NOW)
    assert (first.alert, second.alert) == (True, True)
    assert (first.error and first.error.kind, second.error and second.error.kind) == (
        "refused", "unreachable")  # fmt: skip


OPERATOR = Actor("ops", operator=True)


def _assign(ctx: AppContext, server: str | None, *serials: str, wait: float = 60.0,
            sleeps: list[float] | None = None) -> apple_devices.AppleAssignment:  # fmt: skip
    return apple_devices.assign(
        _client(ctx, Waits()), ctx.unit_of_work, OPERATOR, server, list(serials), wait=wait,
        now=lambda: NOW, sleep=(sleeps if sleeps is not None else []).append,
    )  # fmt: skip


def test_an_assignment_is_polled_until_apple_completes_it(
    ctx: AppContext, apple: FakeApple
) -> None:
    _sync(ctx)
    apple.polls_to_complete = 3
    sleeps: list[float] = []
    done = _assign(ctx, "Mosyle", "dmqx0004ab", sleeps=sleeps)
    assert done.state == "completed" and len(sleeps) == 3
    assert apple.devices["DMQX0004AB"]["server"] == MOSYLE
    assert _local(ctx)["devices"]["DMQX0004AB"] == MOSYLE
    off = _assign(ctx, None, "DMQX0004AB", "DMQX0000AB")
    assert off.state == "completed" and len(off.activities) == 2
    assert apple.devices["DMQX0000AB"]["server"] is None
    assert _local(ctx)["devices"]["DMQX0004AB"] is None


def test_a_failure_and_a_running_activity_are_reported(ctx: AppContext, apple: FakeApple) -> None:
    _sync(ctx)
    apple.fail_activities = True
    failed = _assign(ctx, "Mosyle", "DMQX0004AB")
    assert failed.state == "failed" and "Apple reports a failure" in failed.sentence()
    apple.fail_activities, apple.polls_to_complete = False, 100
    running = _assign(ctx, "Mosyle", "DMQX0004AB", wait=0)
    assert running.state == "in progress" and "still working" in running.sentence()
    assert _local(ctx)["devices"]["DMQX0004AB"] is None, "nothing moves before Apple completes"
    assert _local(ctx)["devices"]["DMQX0000AB"] == JAMF


def test_refusals(ctx: AppContext, apple: FakeApple) -> None:
    _sync(ctx)
    with pytest.raises(AppleRejected, match="Unknown device"):
        _assign(ctx, "Mosyle", "C02UNKNOWN1")
    with pytest.raises(InvalidInput, match="not a serial number"):
        _assign(ctx, "Mosyle", "bad!")
    with pytest.raises(AppleRejected, match="None of these devices"):
        _assign(ctx, None, "DMQX0004AB")


def test_apples_servers_are_changed_at_apple(ctx: AppContext, apple: FakeApple) -> None:
    _sync(ctx)
    with ctx.unit_of_work() as session, pytest.raises(InvalidInput, match="Apple School Manager"):
        remove_server(session, OPERATOR, "Mosyle", NOW)
    with ctx.unit_of_work() as session, pytest.raises(InvalidInput, match="rename it"):
        edit_server(session, OPERATOR, "Mosyle", now=NOW, rename="Lab")
    assert _local(ctx)["servers"][MOSYLE] == ("Mosyle", True)


def test_two_names_mdmbot_counts_as_one_change_nothing(ctx: AppContext, apple: FakeApple) -> None:
    _sync(ctx)
    before = _local(ctx)
    apple.add_server("3B87349736CF4614A94F624E705841CF", "JAMF  pro")
    apple.servers[MOSYLE]["serverName"] = "Lab"
    outcome = apple_sync.run_sync(lambda: _client(ctx, Waits()), ctx.unit_of_work, NOW)
    assert isinstance(outcome.error, AppleMalformed)
    assert "counts as the same" in outcome.error.message
    assert _local(ctx) == before


def test_two_first_syncs_at_once_share_the_state_row(engine: sa.Engine) -> None:
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            with db.unit_of_work(engine) as session:
                status.lock(session)
                status.record_failure(session, AppleUnreachable("Apple is down."), NOW)
            outcome.append(None)
        except BaseException as exc:  # inspected below
            outcome.append(exc)

    with db.unit_of_work(engine) as session:
        status.lock(session)  # the first sync inserts the row and holds it
        racer = threading.Thread(target=second)
        racer.start()
        time.sleep(0.5)
    racer.join(timeout=30)
    assert outcome == [None]
    with db.unit_of_work(engine, readonly=True) as session:
        assert status.health(session).failing_kind == "unreachable"
