"""The exceptions segbatch raises, one root with a category per boundary.

    SegbatchError
    ├── ConfigError            a setting is missing or malformed
    ├── StorageError           listing or fetching objects (S3, local files)
    │   ├── StorageUnavailable unreachable or overloaded for now; may succeed later
    │   ├── ObjectNotFound     the object named does not exist
    │   ├── ObjectTooLarge     over the configured size limit (not read)
    │   └── AccessDenied       no credentials, rejected ones, or no permission
    ├── DecodeError            bytes that are not a usable image
    │   ├── EmptyImage         zero bytes
    │   ├── NotAnImage         no known image signature
    │   ├── CorruptImage       truncated or damaged data
    │   ├── ImageTooLarge      over the configured pixel limit (read from the header)
    │   └── UnsupportedImage   an image format or pixel mode that is not decoded
    ├── ModelError             a model version that cannot be used
    │   ├── ModelNotFound      no such model version
    │   └── ChecksumMismatch   an artifact differs from its recorded sha256
    ├── InferenceError         OpenVINO failed while running the model
    ├── DatabaseError          reading or writing results
    │   ├── DatabaseUnavailable  unreachable or busy for now; may succeed later
    │   └── JobNotFound        no job with the id given
    └── BrokerError            the task queue (Redis) is unreachable or stays full

Errors from botocore, OpenVINO, SQLAlchemy and Redis are translated into these where
they enter segbatch, with ``raise ... from exc``, so callers handle one family only.
Every error carries a short machine-readable ``kind`` that is stored with a failed
image.
"""

from __future__ import annotations


class SegbatchError(Exception):
    """Root of every error segbatch raises on purpose."""

    kind = "error"


class ConfigError(SegbatchError):
    kind = "config"


class StorageError(SegbatchError):
    kind = "storage"


class StorageUnavailable(StorageError):
    """The object store could not serve the request for now: unreachable, the
    connection dropped, or it answered with a server error or asked to slow down.
    The same request may succeed later."""

    kind = "storage_unavailable"


class ObjectNotFound(StorageError):
    kind = "not_found"


class ObjectTooLarge(StorageError):
    kind = "too_large"


class AccessDenied(StorageError):
    """The store refused to serve the object to these credentials, or there were
    none: a setting to fix, after which a re-run retries the image."""

    kind = "access_denied"


class DecodeError(SegbatchError):
    kind = "decode"


class EmptyImage(DecodeError):
    kind = "empty"


class NotAnImage(DecodeError):
    kind = "not_an_image"


class CorruptImage(DecodeError):
    kind = "corrupt"


class ImageTooLarge(DecodeError):
    kind = "too_large"


class UnsupportedImage(DecodeError):
    kind = "unsupported"


class ModelError(SegbatchError):
    kind = "model"


class ModelNotFound(ModelError):
    kind = "model_not_found"


class ChecksumMismatch(ModelError):
    kind = "checksum"


class InferenceError(SegbatchError):
    kind = "inference"


class DatabaseError(SegbatchError):
    kind = "database"


class DatabaseUnavailable(DatabaseError):
    """The database could not serve the request for now: the connection failed or
    was lost, the server is shutting down, or a lock or deadlock ended the
    transaction. The same request may succeed later."""

    kind = "database_unavailable"


class JobNotFound(DatabaseError):
    kind = "job_not_found"


class BrokerError(SegbatchError):
    kind = "broker"
