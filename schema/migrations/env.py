"""Alembic's entry point for segbatch's migrations.

``segbatch.schema.db.upgrade`` passes an open connection in
``config.attributes["connection"]``. From the command line, give the database with
``alembic -c schema/alembic.ini -x url=postgresql://... upgrade head``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from segbatch.errors import ConfigError
from segbatch.schema.db import make_engine
from segbatch.schema.tables import Base


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        # SQLite alters tables by copying them; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return

    if context.config.config_file_name is not None:
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise ConfigError(
            "expected a database URL as -x url=... or sqlalchemy.url, got none"
        )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise ConfigError("segbatch's migrations run against a live database only")
run_online()
