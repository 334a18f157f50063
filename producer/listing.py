"""Listing the images of a source: an S3 prefix, a local folder or a manifest file.

Images are recognised by the extension of their name (``defaults.IMAGE_EXTENSIONS``,
any case). A name without an extension is passed over, unless a content-type check
is asked for: then each such S3 object gets one HEAD request and is kept when its
``Content-Type`` is ``image/*``. Local files without an extension are always passed
over. Names with any other extension are always passed over.

S3 keys are returned exactly as stored: botocore asks the server for URL-encoded
keys in listings and decodes them again itself, so no further decoding is done.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from segbatch import defaults
from segbatch.errors import ConfigError, ObjectNotFound, StorageError
from segbatch.s3 import make_s3_client, translate_s3_error
from segbatch.uris import (
    FILE_SCHEME,
    S3Location,
    is_s3_uri,
    local_path,
    parse_s3_uri,
)

logger = logging.getLogger(__name__)

_COMMENT = "#"
_CSV_SUFFIXES = frozenset({".csv"})


@dataclass(frozen=True)
class ObjectInfo:
    """One listed image; ``etag`` and ``size_bytes`` are known for listed objects."""

    uri: str
    etag: str | None = None
    size_bytes: int | None = None


def image_extension(name: str) -> str | None:
    """The lower-case extension of the last path segment of ``name``, if any."""
    base = name.rsplit("/", 1)[-1]
    _, dot, extension = base.rpartition(".")
    if not dot or not extension:
        return None
    return extension.lower()


def is_image_name(name: str) -> bool:
    return image_extension(name) in defaults.IMAGE_EXTENSIONS


def iter_image_uris(
    source: str, *, client: Any | None = None, check_content_type: bool = False
) -> Iterator[ObjectInfo]:
    """Every image URI a source names, lazily.

    Args:
        source: ``s3://bucket/prefix`` (every key starting with ``prefix``, in the
            server's order); a local folder (recursive, in sorted path order,
            symbolic links to folders not followed); a single local image;
            or a manifest file. A manifest holds one URI or path per line; blank
            lines and lines starting with ``#`` are ignored, surrounding
            whitespace is dropped, relative paths are relative to the manifest's
            folder. A ``.csv`` manifest is read with the csv module and its first
            column taken (a header row is passed over as it is no image name).
        client: the S3 client to use; one is made from the environment if needed.
        check_content_type: HEAD extension-less S3 keys and keep ``image/*`` ones.

    Raises:
        ObjectNotFound: the local folder or manifest does not exist.
        StorageError: the S3 listing failed (missing bucket, access denied, ...).
    """
    if not source.strip():
        raise ConfigError(
            "expected a source (a folder, an image, a manifest or "
            "s3://bucket/prefix), got an empty string"
        )
    if is_s3_uri(source):
        client = make_s3_client() if client is None else client
        yield from _iter_s3_prefix(parse_s3_uri(source), client, check_content_type)
        return

    path = local_path(source)
    if path.is_dir():
        yield from _iter_folder(path)
    elif path.is_file() and is_image_name(path.name):
        yield ObjectInfo(_local_uri(path.resolve()), size_bytes=path.stat().st_size)
    elif path.is_file():
        yield from _iter_manifest(path, client, check_content_type)
    else:
        raise ObjectNotFound(f"no folder, image or manifest at {source!r}")


def image_extensions_text() -> str:
    """The extensions an image name may end in, as a user reads them."""
    return ", ".join(f".{extension}" for extension in sorted(defaults.IMAGE_EXTENSIONS))


def _iter_s3_prefix(
    prefix: S3Location, client: Any, check_content_type: bool
) -> Iterator[ObjectInfo]:
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key)
    kept = passed_over = 0
    try:
        for page in pages:
            for item in page.get("Contents", ()):
                location = S3Location(prefix.bucket, item["Key"])
                if not _keep_s3_key(location, client, check_content_type):
                    passed_over += 1
                    continue
                kept += 1
                etag = item.get("ETag")
                yield ObjectInfo(
                    location.uri, etag.strip('"') if etag else None, item.get("Size")
                )
    except (ClientError, BotoCoreError) as exc:
        raise translate_s3_error(exc, prefix, "list") from exc

    logger.info(
        "Listed %d images under %s, passed over %d other keys",
        kept,
        prefix.uri,
        passed_over,
    )


def _keep_s3_key(location: S3Location, client: Any, check_content_type: bool) -> bool:
    if is_image_name(location.key):
        return True
    if not check_content_type or location.key.endswith("/"):
        return False
    if image_extension(location.key) is not None:
        return False
    return _has_image_content_type(location, client)


def _has_image_content_type(location: S3Location, client: Any) -> bool:
    try:
        response = client.head_object(Bucket=location.bucket, Key=location.key)
    except (ClientError, BotoCoreError) as exc:
        error = translate_s3_error(exc, location, "inspect")
        if isinstance(error, ObjectNotFound):
            logger.warning("Passed over %s: gone before its HEAD", location.uri)
            return False
        raise error from exc

    content_type = str(response.get("ContentType", ""))
    logger.debug("%s has content type %r", location.uri, content_type)
    return content_type.lower().startswith("image/")


def _iter_folder(folder: Path) -> Iterator[ObjectInfo]:
    kept = passed_over = 0
    for entry in _walk_sorted(folder.resolve()):
        if not is_image_name(entry.name):
            logger.debug("Passed over %s: not an image name", entry.path)
            passed_over += 1
            continue
        kept += 1
        yield ObjectInfo(_local_uri(Path(entry.path)), size_bytes=entry.stat().st_size)

    logger.info(
        "Listed %d images under %s, passed over %d other files",
        kept,
        folder,
        passed_over,
    )


def _walk_sorted(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=_path_order)
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc.strerror or exc}") from exc

    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(Path(entry.path))
        elif entry.is_file():
            yield entry


def _path_order(entry: os.DirEntry[str]) -> str:
    """Sorts a folder's entries so that the walk yields paths in sorted order."""
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _iter_manifest(
    manifest: Path, client: Any | None, check_content_type: bool
) -> Iterator[ObjectInfo]:
    kept = passed_over = 0
    for entry in _read_manifest_entries(manifest):
        if is_s3_uri(entry):
            location = parse_s3_uri(entry)
            if client is None and check_content_type:
                client = make_s3_client()
            keep = _keep_s3_key(location, client, check_content_type)
            uri = location.uri
        else:
            path = local_path(entry)
            keep = is_image_name(path.name)
            uri = _local_uri(Path(os.path.normpath(manifest.parent.resolve() / path)))
        if not keep:
            logger.debug("Passed over %s: not an image", uri)
            passed_over += 1
            continue
        kept += 1
        yield ObjectInfo(uri)

    logger.info(
        "Read %d image URIs from %s, passed over %d other entries",
        kept,
        manifest,
        passed_over,
    )


def _read_manifest_entries(manifest: Path) -> Iterator[str]:
    """The non-blank, non-comment entries of a manifest, in file order."""
    is_csv = manifest.suffix.lower() in _CSV_SUFFIXES
    try:
        with manifest.open(encoding="utf-8-sig", newline="") as lines:
            for line in lines:
                text = line.strip()
                if not text or text.startswith(_COMMENT):
                    continue
                if is_csv:
                    cells = next(csv.reader([text]), [])
                    text = cells[0].strip() if cells else ""
                if text:
                    yield text
    except UnicodeDecodeError as exc:
        raise StorageError(
            f"cannot read manifest {manifest}: expected UTF-8 text ({exc.reason}); "
            f"a file is taken as an image only when named {image_extensions_text()}"
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot read manifest {manifest}: {exc.strerror or exc}"
        ) from exc


def _local_uri(path: Path) -> str:
    """``file://`` plus an absolute path, without resolving symbolic links."""
    return f"{FILE_SCHEME}{path}"
