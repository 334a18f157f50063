"""The S3 client and the translation of botocore errors into segbatch's own.

Endpoint, region and credentials come from boto3's usual chain (``AWS_ENDPOINT_URL``
or ``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, profiles).
A client is thread-safe: one is shared by every download thread of a process.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from segbatch import defaults
from segbatch.config import Settings, load_settings
from segbatch.errors import (
    AccessDenied,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
)
from segbatch.uris import S3Location

logger = logging.getLogger(__name__)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
)
_BAD_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
# Answers that say "not now" rather than "no"; any 5xx status says the same.
_BUSY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "503"}
)
_SERVER_ERROR_STATUS = 500


def make_s3_client(
    settings: Settings | None = None,
    *,
    endpoint_url: str | None = None,
    max_attempts: int = defaults.S3_MAX_ATTEMPTS,
) -> Any:
    """A boto3 S3 client with segbatch's addressing style, retries and timeouts.

    Args:
        settings: supplies the addressing style and the download concurrency the
            connection pool must serve; read from the environment when omitted.
        endpoint_url: overrides boto3's own endpoint resolution when given.
        max_attempts: attempts per request, the first one included.
    """
    settings = load_settings() if settings is None else settings
    config = Config(
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=defaults.S3_CONNECT_TIMEOUT_S,
        read_timeout=defaults.S3_READ_TIMEOUT_S,
        max_pool_connections=max(
            defaults.S3_MIN_POOL_CONNECTIONS, settings.fetch_concurrency
        ),
    )
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=config
    )
    logger.debug(
        "S3 client for %s, %s addressing",
        client.meta.endpoint_url,
        settings.s3_addressing_style,
    )
    return client


def translate_s3_error(
    exc: ClientError | BotoCoreError, location: S3Location, action: str
) -> StorageError:
    """The segbatch error for a botocore failure while ``action``-ing ``location``.

    The caller raises the result ``from exc``. A missing key becomes
    :class:`ObjectNotFound`; an unreachable endpoint, a dropped connection, a
    server error or a request to slow down :class:`StorageUnavailable`; missing or
    rejected credentials and a refused permission :class:`AccessDenied`;
    everything else a :class:`StorageError`. The message names the object and
    says what went wrong.
    """
    where = location.uri
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NO_BUCKET_CODES:
            return StorageError(
                f"cannot {action} {where}: bucket {location.bucket!r} does not exist"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFound(f"cannot {action} {where}: no such key")
        if code in _BAD_CREDENTIAL_CODES:
            return AccessDenied(
                f"cannot {action} {where}: credentials rejected ({code})"
            )
        if code in _DENIED_CODES or status == 403:
            return AccessDenied(f"cannot {action} {where}: access denied ({code})")
        if code in _BUSY_CODES or (status or 0) >= _SERVER_ERROR_STATUS:
            return StorageUnavailable(
                f"cannot {action} {where}: the server answered {code or status}"
            )
        return StorageError(
            f"cannot {action} {where}: the server answered {code or status}"
        )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(f"cannot {action} {where}: no usable S3 credentials")
    if isinstance(exc, SSLError):
        return StorageError(
            f"cannot {action} {where}: the TLS handshake failed ({exc})"
        )
    if isinstance(exc, BotoConnectionError):
        return StorageUnavailable(
            f"cannot {action} {where}: endpoint unreachable ({type(exc).__name__})"
        )
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        return StorageUnavailable(
            f"cannot {action} {where}: the connection dropped ({type(exc).__name__})"
        )
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}")
