"""The schema check at start-up: one query when the schema is at head, Alembic only otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from core import db


def test_the_packaged_head_is_alembics() -> None:
    script = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    assert db.packaged_head() == script.get_current_head()


def test_at_head_only_on_a_schema_at_head(database_url: str) -> None:
    assert db.at_head(database_url)
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0012'")
        assert not db.at_head(database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
        assert not db.at_head(database_url)
    finally:
        engine.dispose()


def test_a_missing_database_is_not_at_head_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert not db.at_head(f"sqlite:///{missing}")
    assert not missing.exists()


def test_a_command_on_a_schema_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mdmbot.db'}"
    db.upgrade(url)
    probe = (
        "import sys; from bot.cli.main import main; code = main(['server', 'list']); "
        "print('alembic' in sys.modules); raise SystemExit(code)"
    )
    env = {"MDMBOT_DATABASE_URL": url, "MDMBOT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    env["MDMBOT_SECRET_KEY"] = "k" * 40
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False", "Alembic is loaded only to migrate"
