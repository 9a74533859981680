"""The restore drill: serve on SQLite with MDM servers authenticating, back up under load,
SIGKILL, lose the data directory, restore (into SQLite, and into PostgreSQL), serve again."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.context import utc_now
from core import db
from tests.conftest import postgres_schema
from tests.dep_client import Creds
from tests.dep_devices_client import NanoDep
from tests.e2e.conftest import ADMIN
from tests.e2e.drill_support import DepServe, Load, cli, opens
from tests.fakeslack import FakeSlack
from tests.integration.backup_support import context, seed
from tests.processes import bot_env


@pytest.fixture
def first_run(fake: FakeSlack, tmp_path: Path) -> Iterator[tuple[dict[str, Creds], str, Path]]:
    """A served SQLite database, backed up under load, then killed and its data dir deleted."""
    data = tmp_path / "data"
    ctx = context(f"sqlite:///{data / 'mdmbot.db'}", data)
    db.upgrade(ctx.settings.database_url)
    creds = seed(ctx)
    with ctx.unit_of_work() as session:  # an expiry alert is due at the first sweep
        soon = utc_now() + timedelta(days=20)
        session.execute(sa.text("UPDATE token SET expires_at = :at"), {"at": soon})
    ctx.engine.dispose()
    env = bot_env(fake, data, MDMBOT_ADMINS=ADMIN, MDMBOT_LEASE_SECONDS="3")
    serve = DepServe(env, tmp_path / "first.log")
    try:
        serve.wait_ready()
        serve.wait_until(serve.swept)
        fake.wait_for(lambda: len(fake.messages_in("C0ALERTS")) >= 3, 10)
        client = NanoDep(serve.dep_url, creds["District Jamf"])
        client.drain(limit=7)
        assert len(client.devices) == 20
        load = Load([serve.dep_url], list(creds.values()))
        backup = tmp_path / "drill.mdmbackup"
        made = cli(env, "backup", str(backup))
        answers = load.stop()
        assert made.returncode == 0, made.stderr
        assert answers and set(answers) == {200}, "no MDM server noticed the backup"
    finally:
        serve.terminate(signal.SIGKILL)
    shutil.rmtree(data)
    yield creds, str(client.cursor), backup


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_restore_drill(
    fake: FakeSlack,
    tmp_path: Path,
    first_run: tuple[dict[str, Creds], str, Path],
    engine: str,
) -> None:
    creds, cursor, backup = first_run
    posted = len(fake.messages_in("C0ALERTS"))
    with ExitStack() as stack:
        url = (
            stack.enter_context(postgres_schema(migrate=False)) if engine == "postgresql" else None
        )
        env = bot_env(fake, tmp_path / "new-data", url, MDMBOT_LEASE_SECONDS="3")
        restored = cli(env, "restore", str(backup))
        assert restored.returncode == 0, restored.stderr
        assert restored.stdout.startswith(f"Restored {backup} (taken ")
        serve = DepServe(env, tmp_path / "second.log")
        stack.callback(serve.terminate)
        serve.wait_ready()
        for one in creds.values():
            assert opens(serve.dep_url, one) == 200, "the same tokens open /session"
        client = NanoDep(serve.dep_url, creds["District Jamf"], cursor=cursor, syncing=True)
        client.step(limit=50)  # asserts the sync with the pre-backup cursor succeeded
        assert client.log == ["sync 0"]
        serve.wait_until(serve.swept, timeout=30)
        assert len(fake.messages_in("C0ALERTS")) == posted, "no alert or checklist posted again"
        database = sa.create_engine(url or f"sqlite:///{tmp_path / 'new-data' / 'mdmbot.db'}")
        with database.connect() as conn:
            cases = conn.execute(sa.text("SELECT status FROM rotationcase")).scalars().all()
            items = conn.execute(sa.text("SELECT count(*) FROM rotationitem")).scalar()
            devices = conn.execute(sa.text("SELECT count(*) FROM device")).scalar()
        database.dispose()
        assert cases == ["open"] and items == 2 and devices == 30, "no checklist lost"
