"""Taking a real PostgreSQL database offline for a while, as a restart would."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL


@contextmanager
def database_offline(url: str, *, for_s: float) -> Iterator[None]:
    """Refuse new connections to ``url``'s database and end the open ones; let
    connections in again ``for_s`` seconds after entering, whatever the block does.
    """
    name = make_url(url).database
    admin_url = os.environ.get("SEGBATCH_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)

    def allow(allowed: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'
            )
            if not allowed:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )

    allow(False)
    back_online = threading.Timer(for_s, allow, args=(True,))
    back_online.start()
    try:
        yield
    finally:
        back_online.join()
