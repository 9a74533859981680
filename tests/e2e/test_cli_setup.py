"""The command line on a new or out-of-date installation: what it creates, what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from core import db
from tests.conftest import postgres_schema
from tests.e2e.test_cli import Cli

READ_AND_WRITE = [
    ("server", "list"),
    ("roles", "list", "--json"),
    ("token", "list"),
    ("alerts", "run", "--dry-run"),
    ("roles", "grant", "U0ADMIN", "Administrator"),
]


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_commands_other_than_db_upgrade_do_not_create_the_schema(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    for args in READ_AND_WRITE:
        result = cli.run(*args)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert result.stderr == (
            "mdmbot: The database has no mdmbot tables yet; create them with "
            "`mdmbot db upgrade` (`mdmbot serve` does it too).\n"
        )
    assert not (cli.data_dir / "mdmbot.db").exists()

    assert cli.ok("db", "upgrade") == "Database schema is up to date.\n"
    assert cli.ok("server", "list").startswith("No MDM servers yet.")


@pytest.mark.postgres
def test_a_shared_postgresql_database_is_not_migrated_by_reading(tmp_path: Path) -> None:
    with postgres_schema(migrate=False) as url:
        cli = Cli(tmp_path, database_url=url)
        result = cli.run("server", "list")
        assert result.returncode == 2 and "`mdmbot db upgrade`" in result.stderr
        assert _tables(url) == set()

        # A schema one migration behind: named, and left as it is.
        config = db.alembic_config(url)
        command.upgrade(config, "0002")
        result = cli.run("token", "list")
        assert (result.returncode, result.stdout) == (2, "")
        head = db.schema_revisions(url)[1]
        assert result.stderr == (
            f"mdmbot: The database schema is behind (revision 0002; this mdmbot needs {head}); "
            "run `mdmbot db upgrade`.\n"
        )
        assert db.schema_revisions(url)[0] == "0002"
        cli.ok("db", "upgrade")
        assert db.schema_revisions(url)[0] == head
        assert cli.ok("token", "list") == "No tokens.\n"


def test_a_database_newer_than_this_mdmbot_is_refused(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    engine = sa.create_engine(f"sqlite:///{cli.data_dir / 'mdmbot.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()

    for args in (("server", "list"), ("db", "upgrade")):
        result = cli.run(*args)
        assert result.returncode == 2
        assert "The database schema (revision 9999) is newer than this mdmbot" in result.stderr
