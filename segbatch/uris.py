"""Image URIs: ``s3://bucket/key`` for objects, ``file:///abs/path`` for local files.

Object keys are kept exactly as stored, never percent-decoded or -encoded: a key may
hold spaces, ``+``, ``%``, ``#``, ``?`` and any unicode letter. ``urllib.parse`` is not
used for that reason: it would treat ``#`` and ``?`` as delimiters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segbatch.errors import ConfigError

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` at the first slash; the key may be empty (a prefix)."""
    if not uri.startswith(S3_SCHEME):
        raise ConfigError(f"expected an s3://bucket/key URI, got {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in S3 URI {uri!r}")
    return S3Location(bucket, key)


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def file_uri(path: Path) -> str:
    """The ``file://`` URI of a local path, made absolute, its characters kept as-is."""
    return f"{FILE_SCHEME}{path.resolve()}"


def local_path(uri: str) -> Path:
    """The local path a ``file://`` URI (or a bare path) names."""
    if uri.startswith(FILE_SCHEME):
        return Path(uri[len(FILE_SCHEME) :])
    if "://" in uri:
        raise ConfigError(f"expected a file:// URI or a local path, got {uri!r}")
    return Path(uri)
