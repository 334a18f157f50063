"""Reading objects from S3 (moto's server on loopback) and local files."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from segbatch.config import Settings
from segbatch.errors import (
    AccessDenied,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
)
from segbatch.s3 import make_s3_client, translate_s3_error
from segbatch.storage import StoredObject, read_object, read_objects
from segbatch.uris import S3Location, file_uri

LOCATION = S3Location("photos", "2024/summer/beach 01.jpg")


def client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"server said {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected_type", "expected_words"),
    [
        (client_error("NoSuchKey", 404), ObjectNotFound, "no such key"),
        (client_error("404", 404), ObjectNotFound, "no such key"),
        (client_error("NoSuchBucket", 404), StorageError, "bucket 'photos' does not"),
        (client_error("AccessDenied", 403), AccessDenied, "access denied"),
        (client_error("403", 403), AccessDenied, "access denied"),
        (client_error("InvalidAccessKeyId", 403), AccessDenied, "credentials rejected"),
        (client_error("SignatureDoesNotMatch", 403), AccessDenied, "credentials"),
        (client_error("SlowDown", 503), StorageUnavailable, "answered SlowDown"),
        (client_error("InternalError", 500), StorageUnavailable, "InternalError"),
        (client_error("InvalidRange", 416), StorageError, "answered InvalidRange"),
        (
            EndpointConnectionError(endpoint_url="http://10.0.0.1:9000"),
            StorageUnavailable,
            "endpoint unreachable",
        ),
        (
            ConnectTimeoutError(endpoint_url="http://10.0.0.1:9000"),
            StorageUnavailable,
            "endpoint unreachable",
        ),
        (
            ReadTimeoutError(endpoint_url="http://10.0.0.1:9000"),
            StorageUnavailable,
            "connection dropped",
        ),
        (NoCredentialsError(), AccessDenied, "no usable S3 credentials"),
        (
            SSLError(endpoint_url="https://10.0.0.1:9000", error="bad certificate"),
            StorageError,
            "TLS handshake failed",
        ),
    ],
)
def test_each_botocore_error_maps_to_a_storage_error_naming_the_object(
    error, expected_type, expected_words
):
    translated = translate_s3_error(error, LOCATION, "read")

    assert type(translated) is expected_type
    assert "s3://photos/2024/summer/beach 01.jpg" in str(translated)
    assert expected_words in str(translated)


def test_an_object_is_read_whole_with_its_etag(s3_client, s3_bucket):
    data = bytes(range(256)) * 40
    s3_client.put_object(Bucket=s3_bucket, Key="a/b.jpg", Body=data)

    stored = read_object(f"s3://{s3_bucket}/a/b.jpg", client=s3_client)

    assert stored == StoredObject(
        uri=f"s3://{s3_bucket}/a/b.jpg",
        data=data,
        etag=hashlib.md5(data).hexdigest(),
        size_bytes=len(data),
    )


def test_a_missing_key_is_object_not_found_naming_bucket_and_key(s3_client, s3_bucket):
    uri = f"s3://{s3_bucket}/no/such key.jpg"

    with pytest.raises(ObjectNotFound, match="no such key") as caught:
        read_object(uri, client=s3_client)

    assert uri in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientError)


def test_a_missing_bucket_is_a_storage_error_naming_the_bucket(s3_client):
    uri = "s3://segbatch-no-such-bucket/x.jpg"

    with pytest.raises(StorageError) as caught:
        read_object(uri, client=s3_client)

    assert not isinstance(caught.value, ObjectNotFound)
    assert "bucket 'segbatch-no-such-bucket' does not exist" in str(caught.value)
    assert uri in str(caught.value)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_a_storage_error_naming_the_object(s3_endpoint):
    client = make_s3_client(
        Settings(), endpoint_url=f"http://127.0.0.1:{closed_port()}", max_attempts=1
    )

    with pytest.raises(StorageError, match="endpoint unreachable") as caught:
        read_object("s3://photos/x.jpg", client=client)

    assert "s3://photos/x.jpg" in str(caught.value)


def test_a_client_follows_the_endpoint_environment_and_the_settings(
    s3_endpoint, monkeypatch
):
    settings = Settings(s3_addressing_style="virtual", fetch_concurrency=37)

    client = make_s3_client(settings)

    assert client.meta.endpoint_url == s3_endpoint
    assert client.meta.config.s3["addressing_style"] == "virtual"
    assert client.meta.config.max_pool_connections == 37
    assert client.meta.config.retries["mode"] == "standard"

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert make_s3_client(settings).meta.endpoint_url == "http://127.0.0.1:9"


def test_many_reads_return_every_object_beside_the_one_that_failed(
    s3_client, s3_bucket, tmp_path
):
    keys = [f"batch/{index:02d}.png" for index in range(12)]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    local = tmp_path / "local.jpg"
    local.write_bytes(b"local bytes")
    missing = f"s3://{s3_bucket}/batch/missing.png"
    uris = [f"s3://{s3_bucket}/{key}" for key in keys]
    uris[5:5] = [missing, file_uri(local)]

    results = read_objects(uris, client=s3_client, concurrency=4)

    assert [uri for uri, _ in results] == uris
    by_uri = dict(results)
    assert isinstance(by_uri.pop(missing), ObjectNotFound)
    assert by_uri.pop(file_uri(local)).data == b"local bytes"
    assert {uri: stored.data for uri, stored in by_uri.items()} == {
        f"s3://{s3_bucket}/{key}": key.encode() for key in keys
    }


@pytest.mark.parametrize("as_uri", [True, False], ids=["file-uri", "bare-path"])
def test_a_local_file_is_read_by_uri_or_bare_path(tmp_path, as_uri):
    path = tmp_path / "x #1 ?.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    uri = file_uri(path) if as_uri else str(path)

    stored = read_object(uri)

    assert stored == StoredObject(
        uri=uri, data=b"\xff\xd8\xff", etag=None, size_bytes=3
    )


@pytest.mark.parametrize(
    ("make_uri", "expected_type", "expected_words"),
    [
        (lambda tmp: file_uri(tmp / "absent.jpg"), ObjectNotFound, "no such file"),
        (lambda tmp: file_uri(tmp), StorageError, "a directory"),
        (lambda tmp: "http://example.com/a.jpg", StorageError, "http://example.com"),
        (lambda tmp: "s3:///a.jpg", StorageError, "no bucket"),
        (lambda tmp: "s3://bucket-only", StorageError, "no key"),
    ],
    ids=["missing-file", "directory", "other-scheme", "no-bucket", "no-key"],
)
def test_an_unreadable_uri_raises_a_storage_error_naming_it(
    tmp_path: Path, make_uri, expected_type, expected_words
):
    uri = make_uri(tmp_path)

    with pytest.raises(StorageError) as caught:
        read_object(uri)

    assert type(caught.value) is expected_type
    assert expected_words in str(caught.value)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_an_object_over_the_size_limit_is_refused_unread(
    where, s3_client, s3_bucket, tmp_path
):
    if where == "s3":
        uri = f"s3://{s3_bucket}/big one.jpg"
        s3_client.put_object(Bucket=s3_bucket, Key="big one.jpg", Body=b"x" * 2048)
    else:
        path = tmp_path / "big one.jpg"
        path.write_bytes(b"x" * 2048)
        uri = f"file://{path}"

    with pytest.raises(ObjectTooLarge) as raised:
        read_object(uri, client=s3_client, max_bytes=1024)

    assert uri in str(raised.value)
    assert "2048 bytes" in str(raised.value)
    assert "1024 bytes" in str(raised.value)
    assert read_object(uri, client=s3_client, max_bytes=2048).size_bytes == 2048


def test_a_local_file_that_cannot_be_opened_is_access_denied(tmp_path, monkeypatch):
    image = tmp_path / "locked.jpg"
    image.write_bytes(b"\xff\xd8")

    def refuse(self: Path) -> bytes:
        # The suite may run as root, which no file mode keeps out.
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)

    with pytest.raises(AccessDenied, match=r"locked\.jpg: permission denied"):
        read_object(str(image))
