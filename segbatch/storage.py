"""Reading whole objects from S3 (``s3://bucket/key``) or local files (``file://``).

Every failure leaves this module as a :class:`~segbatch.errors.StorageError` (or
its :class:`~segbatch.errors.ObjectNotFound`) naming the URI, raised from the
underlying botocore or OS error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from segbatch import defaults
from segbatch.errors import (
    AccessDenied,
    ConfigError,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
)
from segbatch.s3 import make_s3_client, translate_s3_error
from segbatch.uris import S3Location, is_s3_uri, local_path, parse_s3_uri

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes with the identity the store gave them."""

    uri: str
    data: bytes
    etag: str | None
    size_bytes: int


def read_object(
    uri: str,
    *,
    client: Any | None = None,
    max_bytes: int = defaults.MAX_OBJECT_BYTES,
) -> StoredObject:
    """The whole content of the object or local file ``uri`` names.

    Args:
        uri: ``s3://bucket/key``, ``file:///abs/path`` or a bare local path.
        client: the S3 client to use; one is made from the environment when
            omitted (pass one to reuse its connections).
        max_bytes: larger objects are refused from their stated size, unread.

    Raises:
        ObjectNotFound: no object or file by that name.
        ObjectTooLarge: the object is larger than ``max_bytes``.
        StorageError: anything else that stops the read.
    """
    if is_s3_uri(uri):
        location = _s3_location(uri)
        client = make_s3_client() if client is None else client
        return _read_s3(uri, location, client, max_bytes)
    return _read_local(uri, max_bytes)


def read_objects(
    uris: Iterable[str],
    *,
    client: Any | None = None,
    concurrency: int = defaults.FETCH_CONCURRENCY,
) -> list[tuple[str, StoredObject | StorageError]]:
    """Read many objects at once, each failure kept beside its URI.

    Up to ``concurrency`` reads run in parallel threads; a failed object never
    stops the others. The result keeps the order of ``uris``.
    """
    uris = list(uris)
    if client is None and any(is_s3_uri(uri) for uri in uris):
        client = make_s3_client()

    def attempt(uri: str) -> tuple[str, StoredObject | StorageError]:
        try:
            return uri, read_object(uri, client=client)
        except StorageError as exc:
            logger.debug("Read failed: %s", exc)
            return uri, exc

    with ThreadPoolExecutor(
        max_workers=max(1, concurrency), thread_name_prefix="segbatch-fetch"
    ) as pool:
        return list(pool.map(attempt, uris))


def _s3_location(uri: str) -> S3Location:
    try:
        location = parse_s3_uri(uri)
    except ConfigError as exc:
        raise StorageError(f"cannot read {uri!r}: {exc}") from exc
    if not location.key:
        raise StorageError(f"cannot read {uri!r}: expected s3://bucket/key, no key")
    return location


def _read_s3(
    uri: str, location: S3Location, client: Any, max_bytes: int
) -> StoredObject:
    try:
        response = client.get_object(Bucket=location.bucket, Key=location.key)
        _check_size(uri, response.get("ContentLength", 0), max_bytes, response)
        data = response["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise translate_s3_error(exc, location, "read") from exc

    etag = response.get("ETag")
    return StoredObject(
        uri=uri,
        data=data,
        etag=etag.strip('"') if etag else None,
        size_bytes=len(data),
    )


def _check_size(
    uri: str, size_bytes: int, max_bytes: int, response: Any | None = None
) -> None:
    if size_bytes <= max_bytes:
        return
    if response is not None:
        response["Body"].close()
    raise ObjectTooLarge(
        f"cannot read {uri}: it is {size_bytes} bytes, over the limit of "
        f"{max_bytes} bytes (SEGBATCH_MAX_OBJECT_BYTES); refused unread"
    )


def _read_local(uri: str, max_bytes: int) -> StoredObject:
    try:
        path = local_path(uri)
    except ConfigError as exc:
        raise StorageError(f"cannot read {uri!r}: {exc}") from exc

    try:
        _check_size(uri, path.stat().st_size, max_bytes)
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"cannot read {uri}: no such file") from exc
    except IsADirectoryError as exc:
        raise StorageError(f"cannot read {uri}: a directory, not a file") from exc
    except PermissionError as exc:
        raise AccessDenied(f"cannot read {uri}: permission denied") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    return StoredObject(uri=uri, data=data, etag=None, size_bytes=len(data))
