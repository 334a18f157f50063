"""Engines, sessions and migrations for the results database.

PostgreSQL is reached through psycopg 3; SQLite runs in WAL mode with foreign keys
enforced, and every SQLite transaction takes the write lock when it begins (``BEGIN
IMMEDIATE``), so that concurrent writers queue behind the busy timeout instead of
failing when a read turns into a write.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from segbatch import defaults
from segbatch.errors import ConfigError, DatabaseError
from segbatch.schema._rows import database_reason

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"

# Any constant shared by every segbatch process: concurrent upgrades of one
# PostgreSQL database take this advisory lock in turn.
_MIGRATION_LOCK_KEY: Final = 0x5E6BA7C4

_POSTGRES_DRIVERS: Final = ("postgresql", "postgres")


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``: ``postgresql://...`` (psycopg 3) or ``sqlite:///path``.

    A SQLite file is created on first use when ``create`` is true, in a folder that
    must exist; when false, a missing file is a ``DatabaseError`` that names it.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed, create=create)
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise ConfigError(
        "expected a postgresql:// or sqlite:/// database URL, "
        f"got one for {parsed.drivername!r}"
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str) -> None:
    """Migrate the database at ``url`` to the latest schema; a no-op when current."""
    engine = make_engine(url)
    safe_url = engine.url.render_as_string(hide_password=True)
    try:
        # One transaction for every step, so that a failed upgrade leaves nothing
        # behind and concurrent upgrades run one after the other.
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _MIGRATION_LOCK_KEY},
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"could not migrate the database {safe_url}: {database_reason(exc)}"
        ) from exc
    except CommandError as exc:
        raise DatabaseError(
            f"could not migrate the database {safe_url}: {exc}"
        ) from exc
    finally:
        engine.dispose()
    logger.info("Database %s is at the latest schema.", safe_url)


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration for segbatch's migrations, without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        scheme = url.partition("://")[0] if "://" in url else "<none>"
        raise ConfigError(
            f"expected a database URL such as postgresql://user@host/db or "
            f"sqlite:///path, got one with scheme {scheme!r} that does not parse"
        ) from exc
    if parsed.drivername in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _check_sqlite_path(url: URL, *, create: bool) -> None:
    # An SQLite URI (``?uri=true``) is the driver's to interpret.
    if not url.database or url.database == ":memory:" or "uri" in url.query:
        return
    path = Path(url.database).absolute()
    if not create and not path.is_file():
        raise DatabaseError(f"no results database at {path} (from {url})")
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot create the results database {path}: no folder {path.parent}"
        )


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy: the driver's own implicit BEGIN
    # would be deferred, and could not be made IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    busy_timeout_ms = int(defaults.SQLITE_BUSY_TIMEOUT_S * 1000)
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
