"""The server listing (`/mdm list`, the App Home) is read again only when the data changed: a
change by any connection, this process or another, shows at once; nothing stale is ever listed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core import db
from core.connections import state
from core.tokens import servers
from core.vault import Vault
from tests.conftest import NOW
from tests.devices_support import add_server
from tests.integration import OPERATOR


def _add(engine: sa.Engine, vault: Vault, name: str) -> None:
    with db.unit_of_work(engine) as session:
        add_server(session, vault, name, NOW)


def _names(engine: sa.Engine) -> list[str]:
    """The listing as `/mdm list` reads it: a read-only transaction."""
    with db.transaction(engine, readonly=True) as connection:
        return [view.name for view in state.listed(connection)]


def test_a_commit_by_another_engine_shows_in_the_next_listing(
    engine: sa.Engine, vault: Vault
) -> None:
    """Another engine is another process's connection (a second worker, the CLI)."""
    _add(engine, vault, "Jamf")
    assert _names(engine) == ["Jamf"]
    assert _names(engine) == ["Jamf"]  # unchanged: the same answer
    other = db.make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        _add(other, vault, "Mosyle")
        with db.unit_of_work(other) as session:
            servers.edit_server(session, OPERATOR, "Jamf", rename="Jamf Pro", now=NOW)
    finally:
        other.dispose()
    assert _names(engine) == ["Jamf Pro", "Mosyle"]


def test_a_commit_on_the_same_pooled_connection_shows_in_the_next_listing(
    engine: sa.Engine, vault: Vault
) -> None:
    """SQLite does not count a connection's own commits in its data version."""
    _add(engine, vault, "Jamf")
    with db.transaction(engine, readonly=True) as connection:
        used = connection.connection.dbapi_connection
        assert [view.name for view in state.listed(connection)] == ["Jamf"]
    with db.transaction(engine) as connection:
        assert connection.connection.dbapi_connection is used
        connection.exec_driver_sql("UPDATE server SET release_devices = false")
    with db.transaction(engine, readonly=True) as connection:
        assert connection.connection.dbapi_connection is used
        assert [view.release_devices for view in state.listed(connection)] == [False]


def test_a_listing_inside_a_write_is_read_fresh_and_never_kept(
    engine: sa.Engine, vault: Vault
) -> None:
    """What a transaction wrote and then rolled back is never listed again."""
    _add(engine, vault, "Jamf")
    assert _names(engine) == ["Jamf"]
    with db.unit_of_work(engine) as session:
        session.connection().exec_driver_sql("UPDATE server SET name = 'Temp'")
        assert db.data_marker(session.connection()) is None
        assert [view.name for view in state.listed(session)] == ["Temp"]
        session.rollback()
    assert _names(engine) == ["Jamf"]


def test_a_read_only_unit_that_writes_keeps_nothing(engine: sa.Engine, vault: Vault) -> None:
    _add(engine, vault, "Jamf")
    with db.unit_of_work(engine, readonly=True) as session:
        session.connection().exec_driver_sql("UPDATE server SET name = 'Temp'")
        assert [view.name for view in state.listed(session)] == ["Temp"]
    assert _names(engine) == ["Jamf"]


def test_the_marker_repeats_only_while_nothing_changed(engine: sa.Engine, vault: Vault) -> None:
    with db.transaction(engine, readonly=True) as connection:
        first = db.data_marker(connection)
    with db.transaction(engine, readonly=True) as connection:
        assert db.data_marker(connection) == first is not None
    _add(engine, vault, "Jamf")
    with db.transaction(engine, readonly=True) as connection:
        assert db.data_marker(connection) != first


def test_listed_views_cannot_be_changed_in_place(engine: sa.Engine, vault: Vault) -> None:
    """A kept listing is shared by the requests that read it."""
    _add(engine, vault, "Jamf")
    with db.transaction(engine, readonly=True) as connection:
        view = state.listed(connection)[0]
    with pytest.raises(AttributeError):
        view.name = "Other"  # type: ignore[misc]
    assert _names(engine) == ["Jamf"]


def test_a_commit_during_a_read_is_listed_by_the_next_read(engine: sa.Engine, vault: Vault) -> None:
    """The read lists what its snapshot holds, and that is not kept as the newer data."""
    _add(engine, vault, "Jamf")
    other = db.make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        with db.transaction(engine, readonly=True) as connection:
            connection.exec_driver_sql("SELECT count(*) FROM server").scalar()
            _add(other, vault, "Mosyle")
            listed = [view.name for view in state.listed(connection)]
        assert listed == (["Jamf"] if engine.dialect.name == "sqlite" else ["Jamf", "Mosyle"])
    finally:
        other.dispose()
    assert _names(engine) == ["Jamf", "Mosyle"]


def test_an_engine_made_elsewhere_lists_without_keeping(engine: sa.Engine, vault: Vault) -> None:
    _add(engine, vault, "Jamf")
    plain = sa.create_engine(engine.url)
    try:
        with plain.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            assert db.data_marker(connection) is None
            assert [view.name for view in state.listed(connection)] == ["Jamf"]
    finally:
        plain.dispose()
