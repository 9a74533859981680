"""`mdmbot key rotate` while two replicas on PostgreSQL serve MDM servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core import db
from tests.conftest import postgres_schema
from tests.e2e.drill_support import DepServe, Load, cli, opens
from tests.fakeslack import FakeSlack
from tests.integration.backup_support import KEY, context, seed
from tests.processes import bot_env

pytestmark = pytest.mark.postgres


def test_rotating_under_load_fails_no_request_and_then_refuses_the_old_key(
    fake: FakeSlack, tmp_path: Path
) -> None:
    new = Fernet.generate_key().decode()
    with postgres_schema(migrate=False) as url:
        db.upgrade(url)
        ctx = context(url, tmp_path)
        creds = list(seed(ctx).values())
        ctx.engine.dispose()
        both = bot_env(fake, tmp_path, url, MDMBOT_SECRET_KEY=f"{new},{KEY}")
        replicas = [DepServe(both, tmp_path / f"replica{i}.log") for i in range(2)]
        try:
            for replica in replicas:
                replica.wait_ready()
            load = Load([r.dep_url for r in replicas], creds)
            time.sleep(1)
            rotated = cli(both, "key", "rotate")
            time.sleep(1)
            answers = load.stop()
            assert rotated.returncode == 0, rotated.stderr
            assert rotated.stdout.startswith("Re-encrypted 4 stored secrets with the new key key-")
            assert len(answers) > 20 and set(answers) == {200}, "no decryption error anywhere"
            for replica in replicas:
                assert "decrypt" not in replica.log() and "Traceback" not in replica.log()

            replicas[0].terminate()
            replicas[0] = DepServe(
                bot_env(fake, tmp_path, url, MDMBOT_SECRET_KEY=new), tmp_path / "new.log"
            )
            replicas[0].wait_ready()
            assert {opens(replicas[0].dep_url, c) for c in creds} == {200}
        finally:
            for replica in replicas:
                replica.terminate()
        refused = cli(bot_env(fake, tmp_path, url, MDMBOT_SECRET_KEY=KEY), "db", "upgrade")
        assert refused.returncode == 2
        assert refused.stderr == (
            "mdmbot: MDMBOT_SECRET_KEY is not the key this database's token secrets were "
            "encrypted with; restore the right key from your backup (or check "
            "MDMBOT_DATABASE_URL).\n"
        )
