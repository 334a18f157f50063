"""The schema's migrations, engines and URLs, on PostgreSQL and SQLite."""

from __future__ import annotations

import re
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, inspect, text

from segbatch.errors import ConfigError, DatabaseError
from segbatch.schema.db import alembic_config, make_engine, upgrade
from segbatch.schema.tables import Base


def _schema_of(url: str) -> dict[str, object]:
    """Tables, columns, indexes and revision of the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = {
                name: (
                    [column["name"] for column in inspector.get_columns(name)],
                    sorted(index["name"] for index in inspector.get_indexes(name)),
                )
                for name in inspector.get_table_names()
            }
            revision = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return {"tables": tables, "revision": revision}


def _differences(url: str, metadata: MetaData) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "compare_server_default": True},
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_url", ["empty_postgres_url", "empty_sqlite_url"])
def test_upgrading_an_empty_database_creates_every_table_and_repeating_changes_nothing(
    request, empty_url
):
    url = request.getfixturevalue(empty_url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    upgrade(url)
    first = _schema_of(url)
    upgrade(url)
    second = _schema_of(url)

    assert set(first["tables"]) == {*Base.metadata.tables, "alembic_version"}
    for name, table in Base.metadata.tables.items():
        assert first["tables"][name][0] == [column.name for column in table.columns]
    assert first["revision"] == head
    assert second == first


def test_the_migrated_schema_is_exactly_the_models_schema(database_url):
    assert _differences(database_url, Base.metadata) == []


def test_the_schema_comparison_notices_a_column_the_migrations_lack(database_url):
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["images"].append_column(Column("extra", Integer))

    differences = _differences(database_url, metadata)

    assert [(kind, column.name) for kind, _, _, column in differences] == [
        ("add_column", "extra")
    ]


def test_concurrent_upgrades_of_one_empty_postgres_database_both_succeed(
    empty_postgres_url,
):
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def migrate() -> None:
        barrier.wait()
        try:
            upgrade(empty_postgres_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _differences(empty_postgres_url, Base.metadata) == []


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://user@db.example/results", "postgresql+psycopg"),
        ("postgres://user@db.example/results", "postgresql+psycopg"),
        ("postgresql+psycopg://user@db.example/results", "postgresql+psycopg"),
        ("sqlite:///results.sqlite", "sqlite"),
        ("sqlite://", "sqlite"),
        ("sqlite:///file:results.sqlite?uri=true", "sqlite"),
    ],
)
def test_database_urls_are_given_their_driver(url, driver):
    engine = make_engine(url)

    assert engine.url.drivername == driver
    engine.dispose()


@pytest.mark.parametrize(
    "url", ["mysql://user@db.example/results", "results.sqlite", "://nothing"]
)
def test_a_url_that_is_not_postgresql_or_sqlite_is_a_config_error(url):
    with pytest.raises(ConfigError, match="database URL"):
        make_engine(url)


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        }
    engine.dispose()

    assert pragmas["journal_mode"] == "wal"
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] > 0


def test_an_unreachable_database_is_a_database_error_that_names_it():
    url = "postgresql://postgres@127.0.0.1:1/nowhere"

    with pytest.raises(DatabaseError, match=re.escape("127.0.0.1:1/nowhere")) as raised:
        upgrade(url)

    assert raised.value.__cause__ is not None


def test_a_postgres_connection_answers_through_psycopg(postgres_url):
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
        assert connection.dialect.driver == "psycopg"
    engine.dispose()
