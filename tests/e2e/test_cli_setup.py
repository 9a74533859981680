"""The command line on a new or out-of-date installation: what it creates, what it refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet

from core import db
from tests.conftest import postgres_schema
from tests.e2e.test_cli import KEY_CREATED, Cli, _valid_now

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
    database = cli.data_dir / "mdmbot.db"
    assert cli.ok("db", "info") == (
        f"Database: SQLite {database}\n"
        "Schema:   no mdmbot tables yet (run `mdmbot db upgrade`)\n"
    )
    assert not database.exists(), "db info only looks"

    _, head, _ = db.schema_revisions(f"sqlite:///{database}")
    assert cli.ok("db", "upgrade") == (
        f"Created the mdmbot tables (schema revision {head}) in SQLite {database}.\n"
    )
    assert cli.ok("db", "upgrade") == (
        f"Nothing to do: the schema is already at revision {head} in SQLite {database}.\n"
    )
    assert cli.ok("db", "info") == (
        f"Database: SQLite {database}\nSchema:   revision {head} (up to date)\n"
    )
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
        upgraded = cli.ok("db", "upgrade")
        assert upgraded.startswith(f"Upgraded the schema from revision 0002 to {head} in postgres")
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


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a configuration refusal (exit 2), never an unexpected error."""
    assert (result.returncode, result.stdout) == (2, ""), result
    [line] = result.stderr.splitlines()
    assert line.startswith("mdmbot: ") and "unexpected error" not in line
    return line


def _linked(tmp_path: Path) -> Cli:
    """An installation with one server and its token (the key file was generated)."""
    cli = Cli(tmp_path)
    (cli.work / "mdm.pem").write_bytes(_valid_now(0, "mdm.example.edu").pem)
    cli.ok("db", "upgrade")
    cli.ok("server", "add", "Jamf", "--cert", "mdm.pem", "--out", "t.p7m")
    return cli


def test_the_data_directory_database_and_key_are_private(tmp_path: Path) -> None:
    cli = _linked(tmp_path)

    assert cli.data_dir.stat().st_mode & 0o777 == 0o700
    for name in ("mdmbot.db", "secret.key"):
        assert (cli.data_dir / name).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("content", "state"), [(b"", "empty"), (b"not a key\n", "damaged")])
def test_an_empty_or_damaged_key_file_is_named(tmp_path: Path, content: bytes, state: str) -> None:
    cli = _linked(tmp_path)
    key_file = cli.data_dir / "secret.key"
    key_file.write_bytes(content)

    line = _refused(cli.run("token", "issue", "Jamf", "--out", "u.p7m"))
    assert line == (
        f"mdmbot: The secret key file {key_file} is {state}: it must hold one Fernet key. "
        "Restore it from your backup (or set MDMBOT_SECRET_KEY)."
    )
    assert not (cli.work / "u.p7m").exists()


def test_a_deleted_key_file_is_not_silently_replaced(tmp_path: Path) -> None:
    cli = _linked(tmp_path)
    key_file = cli.data_dir / "secret.key"
    original = key_file.read_bytes()
    key_file.unlink()

    line = _refused(cli.run("token", "issue", "Jamf", "--out", "u.p7m"))
    assert line == (
        f"mdmbot: The secret key file {key_file} is missing, but the database holds token "
        "secrets encrypted with it. Restore the file from your backup (or set "
        "MDMBOT_SECRET_KEY); mdmbot will not start with a new key."
    )
    assert not key_file.exists()
    assert "is missing" in _refused(cli.run("db", "upgrade"))  # what `serve` runs first

    # Another key (a new file, or MDMBOT_SECRET_KEY) is refused too; the original works.
    key_file.write_bytes(Fernet.generate_key())
    assert f"The key in {key_file} is not the key" in _refused(cli.run("token", "issue", "Jamf"))
    cli.env["MDMBOT_SECRET_KEY"] = "p" * 40
    assert "MDMBOT_SECRET_KEY is not the key" in _refused(cli.run("token", "issue", "Jamf"))
    del cli.env["MDMBOT_SECRET_KEY"]
    key_file.write_bytes(original)
    cli.ok("token", "issue", "Jamf", "--out", "u.p7m")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "MDMBOT_DATABASE_URL is not a database URL; use postgresql+psycopg://"),
        ("mysql://u@db.example/mdm", "names an unsupported database (mysql+mysqldb)"),
        ("postgresql+asyncpg://u@db/mdm", "unsupported database (postgresql+asyncpg)"),
        ("nosuch://u@h/x", "names an unsupported database (nosuch)"),
    ],
)
def test_a_bad_database_url_is_one_line(tmp_path: Path, url: str, says: str) -> None:
    cli = Cli(tmp_path, database_url=url)
    for args in (("server", "list"), ("db", "upgrade")):
        assert says in _refused(cli.run(*args))


def test_a_data_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.data_dir.write_text("oops")
    for args in (("server", "list"), ("db", "upgrade")):
        line = _refused(cli.run(*args))
        assert line == (
            f"mdmbot: MDMBOT_DATA_DIR ({cli.data_dir}) is a file; it must be a directory."
        )


def test_the_new_key_file_is_announced_once_naming_its_path(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    first = cli.run("db", "upgrade")
    key_file = cli.data_dir / "secret.key"
    assert first.returncode == 0 and key_file.exists()
    assert first.stderr == (
        f"{KEY_CREATED}{key_file}: token secrets are encrypted with it; back it up (without "
        "it, neither this database's secrets nor its backups can be read).\n"
    )
    assert cli.run("db", "upgrade").stderr == "", "said once, when it was created"


def test_a_misspelt_setting_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    cli.env["MDMBOT_ALRT_CHANNEL"] = "C0ALERTS"
    (cli.work / ".env").write_text("MDMBOT_SECRET_KEY_FILE=/etc/key\nmdmbot_admins=U0ADMIN\n")
    result = cli.run("db", "info")
    assert result.returncode == 0 and result.stdout.startswith("Database: ")
    assert result.stderr.splitlines() == [
        "WARNING mdmbot.settings: MDMBOT_ALRT_CHANNEL (in the environment) is not a setting "
        "mdmbot knows; it is ignored. Did you mean MDMBOT_ALERT_CHANNEL?",
        "WARNING mdmbot.settings: MDMBOT_SECRET_KEY_FILE (in .env) is not a setting mdmbot "
        "knows; it is ignored. Did you mean MDMBOT_SECRET_KEY?",
    ]
    del cli.env["MDMBOT_ALRT_CHANNEL"]
    (cli.work / ".env").write_text("MDMBOT_ALERT_CHANNEL=C0ALERTS\n")
    assert cli.run("db", "info").stderr == "", "known settings, in either case, say nothing"


def test_a_data_directory_under_home_is_expanded(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.env["HOME"] = str(tmp_path / "home")
    cli.env["MDMBOT_DATA_DIR"] = "~/mdmbot-data"
    cli.ok("db", "upgrade")
    assert (tmp_path / "home" / "mdmbot-data" / "mdmbot.db").exists()
    assert not (cli.work / "~").exists(), "no literal ~ directory"
