"""Settings, read once from the environment; command-line flags override them.

| variable                          | meaning                                   |
| --------------------------------- | ----------------------------------------- |
| ``SEGBATCH_DATABASE_URL``         | SQLAlchemy URL of the results database    |
| ``SEGBATCH_BROKER_URL``           | Celery broker (Redis) URL                 |
| ``SEGBATCH_MODEL``                | model version, ``name/version``           |
| ``SEGBATCH_MODELS_DIR``           | folder of model versions                  |
| ``SEGBATCH_BATCH_SIZE``           | images per task                           |
| ``SEGBATCH_MAX_QUEUED_BATCHES``   | producer back-pressure threshold          |
| ``SEGBATCH_MAX_IMAGE_PIXELS``     | refuse images larger than this            |
| ``SEGBATCH_MAX_OBJECT_BYTES``     | refuse objects larger than this, unread   |
| ``SEGBATCH_FETCH_CONCURRENCY``    | concurrent downloads per worker process   |
| ``SEGBATCH_CONFIDENCE``           | minimum detection score                   |
| ``SEGBATCH_CLASS_AGNOSTIC_NMS``   | ``true``: one detection per object, of    |
|                                   | any class (NMS across classes)            |
| ``SEGBATCH_S3_ADDRESSING_STYLE``  | ``path`` (MinIO-like servers) or ``virtual`` |

S3 credentials, region and endpoint are boto3's own: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), profiles and the rest of boto3's chain.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from segbatch import defaults
from segbatch import models as _models_package
from segbatch.errors import ConfigError

# The model versions shipped with the package (the top-level models/ folder).
MODELS_DIR = Path(_models_package.__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    database_url: str = defaults.DATABASE_URL
    broker_url: str = defaults.BROKER_URL
    model: str = defaults.DEFAULT_MODEL
    models_dir: Path = MODELS_DIR
    batch_size: int = defaults.BATCH_SIZE
    max_queued_batches: int = defaults.MAX_QUEUED_BATCHES
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    max_object_bytes: int = defaults.MAX_OBJECT_BYTES
    fetch_concurrency: int = defaults.FETCH_CONCURRENCY
    confidence: float = defaults.CONFIDENCE_THRESHOLD
    class_agnostic_nms: bool = False
    s3_addressing_style: str = defaults.S3_ADDRESSING_STYLE

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: object) -> Settings:
        """A checked copy with the given fields changed; ``None`` values are ignored.

        Raises:
            ConfigError: a changed value is out of range.
        """
        given = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given)  # type: ignore[arg-type]


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_flag(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(raw)


_ENV_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "SEGBATCH_DATABASE_URL": ("database_url", str),
    "SEGBATCH_BROKER_URL": ("broker_url", str),
    "SEGBATCH_MODEL": ("model", str),
    "SEGBATCH_MODELS_DIR": ("models_dir", Path),
    "SEGBATCH_BATCH_SIZE": ("batch_size", int),
    "SEGBATCH_MAX_QUEUED_BATCHES": ("max_queued_batches", int),
    "SEGBATCH_MAX_IMAGE_PIXELS": ("max_image_pixels", int),
    "SEGBATCH_MAX_OBJECT_BYTES": ("max_object_bytes", int),
    "SEGBATCH_FETCH_CONCURRENCY": ("fetch_concurrency", int),
    "SEGBATCH_CONFIDENCE": ("confidence", float),
    "SEGBATCH_CLASS_AGNOSTIC_NMS": ("class_agnostic_nms", _parse_flag),
    "SEGBATCH_S3_ADDRESSING_STYLE": ("s3_addressing_style", str),
}
_VARIABLES = {field: variable for variable, (field, _) in _ENV_FIELDS.items()}
_TYPE_NAMES: dict[Callable[[str], object], str] = {
    str: "text",
    Path: "a path",
    int: "an integer",
    float: "a number",
    _parse_flag: "true or false (1/0, yes/no, on/off)",
}

# The producer measures the queue with redis-py, which reads these schemes only.
_BROKER_SCHEMES = ("redis://", "rediss://", "unix://")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (the process environment by default)."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for variable, (field, parse) in _ENV_FIELDS.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{variable} must be {_TYPE_NAMES[parse]}, got {raw!r}"
            ) from exc
    return Settings(**values)  # type: ignore[arg-type]


def _validate(settings: Settings) -> None:
    positive = (
        "batch_size",
        "max_queued_batches",
        "max_image_pixels",
        "max_object_bytes",
        "fetch_concurrency",
    )
    for field in positive:
        if getattr(settings, field) < 1:
            raise ConfigError(
                f"{_named(field)} must be at least 1, got {getattr(settings, field)}"
            )
    if not 0.0 <= settings.confidence <= 1.0:
        raise ConfigError(
            f"{_named('confidence')} must be within [0, 1], got {settings.confidence}"
        )
    if not settings.broker_url.startswith(_BROKER_SCHEMES):
        url = settings.broker_url
        scheme = url.partition("://")[0] if "://" in url else "<none>"
        raise ConfigError(
            f"{_named('broker_url')} must be a Redis URL (redis://, rediss:// or "
            f"unix://), got one with scheme {scheme!r}"
        )
    if settings.s3_addressing_style not in ("path", "virtual", "auto"):
        raise ConfigError(
            f"{_named('s3_addressing_style')} must be path, virtual or auto, "
            f"got {settings.s3_addressing_style!r}"
        )


def _named(field: str) -> str:
    """A setting's field with the variable that sets it, for error messages."""
    return f"{field} ({_VARIABLES[field]})"
