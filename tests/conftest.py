"""Fixtures shared by the test suite, one block per service."""

from __future__ import annotations

import pytest

# --- S3: moto's server on loopback ----------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint():
    """The URL of a moto S3 server on 127.0.0.1, with boto3's environment aimed at it.

    Fake credentials and region are set for the whole session, and any profile or
    config file of the machine is kept out.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"

    with pytest.MonkeyPatch.context() as patch:
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(variable, raising=False)
        patch.setenv("AWS_ENDPOINT_URL", endpoint_url)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        yield endpoint_url

    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    """A segbatch S3 client on the moto server."""
    from segbatch.config import Settings
    from segbatch.s3 import make_s3_client

    return make_s3_client(Settings())


@pytest.fixture
def s3_bucket(s3_client):
    """The name of a fresh, empty bucket, deleted with its objects afterwards."""
    import uuid

    bucket = f"segbatch-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket

    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            s3_client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3_client.delete_bucket(Bucket=bucket)


# --- end of S3 ------------------------------------------------------------------------


# --- Broker queue: a unique Celery queue on the real Redis ----------------------------


@pytest.fixture(scope="session")
def producer_broker_url():
    """The Redis database the producer's tests use as a Celery broker."""
    return "redis://127.0.0.1:6379/13"


@pytest.fixture
def broker_queue(producer_broker_url):
    """A Redis client on the test broker and a queue name no other test uses.

    Every key of the queue (all priorities) is deleted afterwards.
    """
    import uuid

    import redis

    from segbatch.producer.backpressure import queue_key_names

    client = redis.Redis.from_url(producer_broker_url)
    queue_name = f"segbatch-test-{uuid.uuid4().hex[:12]}"
    yield client, queue_name

    client.delete(*queue_key_names(queue_name), f"_kombu.binding.{queue_name}")
    client.close()


# --- end of broker queue --------------------------------------------------------------


# --- Databases: a fresh PostgreSQL database per session, SQLite per test --------------

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_database(*, migrated: bool):
    """Create a database named ``segbatch_test_<hex>``, yield its URL, drop it.

    ``SEGBATCH_TEST_POSTGRES_URL`` names another server's maintenance database.
    """
    import os
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    from segbatch.schema.db import upgrade

    admin_url = os.environ.get("SEGBATCH_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    name = f"segbatch_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a PostgreSQL database migrated to the latest schema, shared by
    the session: tests keep apart by using model versions and jobs of their own."""
    yield from _postgres_database(migrated=True)


@pytest.fixture
def empty_postgres_url():
    """The URL of a PostgreSQL database with no table at all."""
    yield from _postgres_database(migrated=False)


@pytest.fixture
def empty_sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'segbatch.sqlite'}"


@pytest.fixture
def sqlite_url(empty_sqlite_url):
    """The URL of a fresh SQLite database migrated to the latest schema."""
    from segbatch.schema.db import upgrade

    upgrade(empty_sqlite_url)
    return empty_sqlite_url


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request):
    """A migrated database URL; a test taking it runs on PostgreSQL and on SQLite."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def db_sessions(database_url):
    """A session factory on ``database_url``; its engine is disposed afterwards."""
    from segbatch.schema.db import make_engine, session_factory

    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


# --- end of databases -----------------------------------------------------------------


# --- Model toolchain: the published default model and generated labelled images ------


@pytest.fixture(scope="session")
def published_model():
    """The default model version (``defaults.DEFAULT_MODEL``), its checksums verified.

    ``SEGBATCH_MODELS_DIR`` points at another folder of versions.
    """
    from segbatch import defaults
    from segbatch.config import load_settings
    from segbatch.models import registry

    model = registry.resolve(defaults.DEFAULT_MODEL, load_settings().models_dir)
    registry.verify(model)
    return model


@pytest.fixture(scope="session")
def generated_val_split(tmp_path_factory):
    """The folder of a dataset whose ``val`` split holds the first 8 validation
    images of the default seed (those the default model is evaluated on)."""
    from segbatch.models.toolchain.dataset import write_dataset

    root = tmp_path_factory.mktemp("shapes-val")
    write_dataset(root, train_count=0, val_count=8)
    return root


# --- end of model toolchain -----------------------------------------------------------


# --- A PostgreSQL database a test may take offline ------------------------------------


@pytest.fixture
def own_postgres_url():
    """The URL of a migrated PostgreSQL database that only this test uses, so that
    it may refuse connections for a while (see ``tests.support.outage``)."""
    yield from _postgres_database(migrated=True)


# --- end of a PostgreSQL database a test may take offline -----------------------------
