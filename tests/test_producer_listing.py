"""Listing the images of an S3 prefix, a local folder or a manifest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segbatch import defaults
from segbatch.errors import ObjectNotFound, StorageError
from segbatch.producer.listing import (
    ObjectInfo,
    image_extension,
    is_image_name,
    iter_image_uris,
)
from segbatch.storage import read_object
from segbatch.uris import file_uri

AWKWARD_KEYS = [
    "with space.jpg",
    "two  spaces .jpg",
    "plus+sign.jpg",
    "encoded%2Fslash.png",
    "percent 100%.jpeg",
    "lone%.jpg",
    "hash#fragment.webp",
    "question?x=1&y=2.png",
    "café/日本/ü.jpg",
    "tab\tinside.bmp",
    "/".join(f"level{depth}" for depth in range(10)) + "/deep.tiff",
    "UPPER.JPG",
    "a+b%20c#d?e.jpg",
]


def put_all(client, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(
            pool.map(
                lambda key: client.put_object(
                    Bucket=bucket, Key=key, Body=key.encode()
                ),
                keys,
            )
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", "jpg"),
        ("dir.v2/A.JPEG", "jpeg"),
        ("archive.2024/photo", None),
        ("photo", None),
        ("photo.", None),
        ("folder/", None),
        (".png", "png"),
        ("x.tar.gz", "gz"),
    ],
)
def test_the_extension_is_taken_from_the_last_segment_in_lower_case(name, expected):
    assert image_extension(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [(f"x.{extension}", True) for extension in sorted(defaults.IMAGE_EXTENSIONS)]
    + [
        (f"x.{extension.upper()}", True)
        for extension in sorted(defaults.IMAGE_EXTENSIONS)
    ]
    + [("x.txt", False), ("x", False), ("jpg", False)],
)
def test_images_are_recognised_by_extension_in_any_case(name, expected):
    assert is_image_name(name) is expected


@pytest.mark.slow
def test_a_prefix_of_more_than_a_thousand_keys_is_listed_completely(
    s3_client, s3_bucket
):
    keys = [f"many/{index:05d}.jpg" for index in range(1100)]
    put_all(s3_client, s3_bucket, [*keys, "other/outside.jpg"])

    listed = list(iter_image_uris(f"s3://{s3_bucket}/many/", client=s3_client))

    assert sorted(info.uri for info in listed) == [
        f"s3://{s3_bucket}/{key}" for key in keys
    ]
    assert {info.size_bytes for info in listed} == {len(keys[0])}


def test_awkward_keys_come_back_verbatim_and_read_exactly(s3_client, s3_bucket):
    put_all(s3_client, s3_bucket, AWKWARD_KEYS)

    listed = list(iter_image_uris(f"s3://{s3_bucket}", client=s3_client))

    expected_uris = {f"s3://{s3_bucket}/{key}" for key in AWKWARD_KEYS}
    assert {info.uri for info in listed} == expected_uris
    for info in listed:
        stored = read_object(info.uri, client=s3_client)
        key = info.uri.removeprefix(f"s3://{s3_bucket}/")
        assert stored.data == key.encode()
        assert stored.etag == info.etag


def test_only_image_keys_are_listed(s3_client, s3_bucket):
    images = ["a.jpg", "b.PNG", "c/d.tif"]
    others = ["notes.txt", "c/", "c/e.svg", "no-extension", "f.jpg.json"]
    put_all(s3_client, s3_bucket, images + others)

    listed = iter_image_uris(f"s3://{s3_bucket}/", client=s3_client)

    assert sorted(info.uri for info in listed) == sorted(
        f"s3://{s3_bucket}/{key}" for key in images
    )


def test_extension_less_keys_are_kept_by_content_type_when_asked(s3_client, s3_bucket):
    s3_client.put_object(
        Bucket=s3_bucket, Key="img/a", Body=b"1", ContentType="image/png"
    )
    s3_client.put_object(
        Bucket=s3_bucket, Key="img/b", Body=b"2", ContentType="text/plain"
    )
    s3_client.put_object(Bucket=s3_bucket, Key="img/c.jpg", Body=b"3")
    s3_client.put_object(
        Bucket=s3_bucket, Key="img/d.txt", Body=b"4", ContentType="image/png"
    )
    source = f"s3://{s3_bucket}/img/"

    plain = [info.uri for info in iter_image_uris(source, client=s3_client)]
    checked = [
        info.uri
        for info in iter_image_uris(source, client=s3_client, check_content_type=True)
    ]

    assert plain == [f"{source}c.jpg"]
    assert checked == [f"{source}a", f"{source}c.jpg"]


def test_a_missing_bucket_fails_the_listing_naming_it(s3_client):
    with pytest.raises(StorageError, match="bucket 'segbatch-absent' does not exist"):
        list(iter_image_uris("s3://segbatch-absent/prefix/", client=s3_client))


def test_a_local_folder_is_listed_recursively_in_sorted_order(tmp_path: Path):
    relative = [
        "b.jpg",
        "a/z.png",
        "a/b/c.webp",
        "a #1/x.JPG",
        "a.png",
        "c.txt",
        "a/b/d",
    ]
    for name in relative:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"12345")

    listed = list(iter_image_uris(str(tmp_path)))

    images = sorted(name for name in relative if is_image_name(name))
    assert listed == [
        ObjectInfo(file_uri(tmp_path / name), size_bytes=5) for name in images
    ]


def test_a_single_local_image_is_its_own_source(tmp_path: Path):
    image = tmp_path / "only.jpg"
    image.write_bytes(b"123")

    assert list(iter_image_uris(file_uri(image))) == [
        ObjectInfo(file_uri(image), size_bytes=3)
    ]


def test_a_manifest_keeps_uris_and_paths_and_ignores_blanks_and_comments(
    tmp_path: Path,
):
    manifest = tmp_path / "lists" / "manifest.txt"
    manifest.parent.mkdir()
    manifest.write_text(
        "# a comment line\n"
        "s3://bucket/keys/with#hash.jpg\n"
        "\n"
        "   \n"
        "  # an indented comment\n"
        "s3://bucket/a b/c+d%2F.png  \n"
        "relative/one.jpg\r\n"
        "../up.png\n"
        f"{tmp_path}/absolute.tif\n"
        f"file://{tmp_path}/as uri.jpeg\n"
        "s3://bucket/notes.txt\n",
        encoding="utf-8",
    )

    listed = [info.uri for info in iter_image_uris(str(manifest))]

    assert listed == [
        "s3://bucket/keys/with#hash.jpg",
        "s3://bucket/a b/c+d%2F.png",
        file_uri(tmp_path / "lists" / "relative" / "one.jpg"),
        file_uri(tmp_path / "up.png"),
        file_uri(tmp_path / "absolute.tif"),
        file_uri(tmp_path / "as uri.jpeg"),
    ]


def test_a_csv_manifest_takes_the_first_column_and_passes_over_its_header(
    tmp_path: Path,
):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "uri,label\n"
        "s3://bucket/x.jpg,cat\n"
        '"s3://bucket/comma, inside.png",dog\n'
        "# comment,ignored\n",
        encoding="utf-8-sig",
    )

    listed = [info.uri for info in iter_image_uris(str(manifest))]

    assert listed == ["s3://bucket/x.jpg", "s3://bucket/comma, inside.png"]


def test_a_manifest_that_is_not_utf8_is_a_storage_error(tmp_path: Path):
    manifest = tmp_path / "manifest.txt"
    manifest.write_bytes(b"s3://bucket/caf\xe9.jpg\n")

    with pytest.raises(StorageError, match="expected UTF-8"):
        list(iter_image_uris(str(manifest)))


def test_a_missing_local_source_is_object_not_found(tmp_path: Path):
    with pytest.raises(ObjectNotFound, match="absent"):
        list(iter_image_uris(str(tmp_path / "absent")))


@pytest.mark.parametrize("source", ["", "   "])
def test_an_empty_source_is_a_config_error_not_the_current_folder(source):
    from segbatch.errors import ConfigError

    with pytest.raises(ConfigError, match="empty string"):
        next(iter_image_uris(source))
