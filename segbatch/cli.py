"""The ``segbatch`` command line.

Commands import what they need when they run, so that ``segbatch --help`` and the
producer never load OpenVINO.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from segbatch.config import Settings, load_settings
from segbatch.errors import SegbatchError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Instance segmentation of very large image archives.",
)
db_app = typer.Typer(no_args_is_help=True, help="The results database.")
app.add_typer(db_app, name="db")

# Off a terminal, lines are never wrapped: URIs in logs stay whole for grep.
console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())
logger = logging.getLogger(__name__)

Force = Annotated[
    bool, typer.Option("--force", help="Process images already done for this model.")
]
BatchSize = Annotated[
    int | None, typer.Option(help="Images per batch (env SEGBATCH_BATCH_SIZE).")
]
Model = Annotated[
    str | None, typer.Option(help="Model as name/version (env SEGBATCH_MODEL).")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL of the results (env SEGBATCH_DATABASE_URL)."),
]


@app.callback()
def _configure(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More log lines, given before the command: -v each batch, -vv each "
            "image.",
        ),
    ] = 0,
) -> None:
    level = (
        logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    )
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    # Alembic reports every plugin it loads at INFO.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))


def _settings(**overrides: object) -> Settings:
    return load_settings().replace(**overrides)


@app.command()
def run(
    source: Annotated[
        str,
        typer.Argument(help="A folder, an image, a manifest or s3://bucket/prefix."),
    ],
    database_url: DatabaseUrl = None,
    processes: Annotated[
        int,
        typer.Option(min=1, help="Local worker processes, each with its own model."),
    ] = 1,
    batch_size: BatchSize = None,
    model: Model = None,
    force: Force = False,
) -> None:
    """Segment SOURCE on this machine: local processes and a SQLite file by default."""
    from segbatch.workers.embedded import run_embedded

    settings = _settings(database_url=database_url, batch_size=batch_size, model=model)
    summary = run_embedded(source, settings, processes=processes, force=force)
    _print_summary(summary)
    if summary.listed == 0:
        _warn_no_images(source)
    if summary.failed:
        console.print(
            f"[yellow]{summary.failed} image(s) failed; their reasons are in the "
            f"images table of {escape(settings.database_url)}[/]"
        )


@app.command()
def enqueue(
    source: Annotated[
        str, typer.Argument(help="s3://bucket/prefix, folder or manifest.")
    ],
    force: Force = False,
    batch_size: BatchSize = None,
    max_queued_batches: Annotated[
        int | None,
        typer.Option(
            help="Wait while the queue holds more batches than this "
            "(env SEGBATCH_MAX_QUEUED_BATCHES)."
        ),
    ] = None,
    model: Model = None,
    progress: Annotated[bool, typer.Option(help="Show a progress display.")] = True,
    check_content_type: Annotated[
        bool, typer.Option(help="HEAD extension-less keys and keep image/* ones.")
    ] = False,
) -> None:
    """Queue the images of SOURCE for the Celery workers; print the job id."""
    from segbatch.models import registry
    from segbatch.producer.enqueue import enqueue as enqueue_source
    from segbatch.schema import store
    from segbatch.schema.db import make_engine, session_factory
    from segbatch.workers.celery_app import make_celery

    settings = _settings(
        batch_size=batch_size, max_queued_batches=max_queued_batches, model=model
    )
    identity = registry.identity(registry.resolve(settings.model, settings.models_dir))
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as session:
        model_version_id = store.ensure_model_version(session, **identity.__dict__)
    report = enqueue_source(
        source,
        settings=settings,
        session_factory=sessions,
        celery_app=make_celery(settings),
        model_version_id=model_version_id,
        force=force,
        progress=progress,
        check_content_type=check_content_type,
    )
    console.print(
        f"listed {report.listed}, queued {report.queued} in {report.batches} "
        f"batches, skipped {report.skipped} already done"
    )
    if report.listed == 0:
        _warn_no_images(source)
    print(report.job_id)


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            envvar="SEGBATCH_WORKER_CONCURRENCY",
            min=1,
            help="Worker processes, each with its own compiled model.",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker on the segbatch queue."""
    from segbatch import defaults
    from segbatch.workers.tasks import app as celery_app

    argv = ["worker", "--queues", defaults.QUEUE_NAME, "--pool", "prefork"]
    argv += ["--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    celery_app.worker_main(argv)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The id that enqueue printed.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Show a job's counts by state."""
    from segbatch.schema import store
    from segbatch.schema.db import make_engine, session_factory

    settings = _settings(database_url=database_url)
    sessions = session_factory(make_engine(settings.database_url, create=False))
    with sessions() as session:
        _print_summary(store.job_summary(session, job_id))


@app.command()
def draw(
    image: Annotated[
        Path, typer.Argument(help="An image file.", exists=True, dir_okay=False)
    ],
    out: Annotated[Path, typer.Option(help="Where to write the PNG.")],
    model: Model = None,
) -> None:
    """Segment one image and write it with its masks, boxes and labels drawn."""
    import cv2

    from segbatch.draw import draw_detections
    from segbatch.models import registry
    from segbatch.workers.decode import decode_image
    from segbatch.workers.model import SegmentationModel

    if not out.parent.is_dir():
        raise typer.BadParameter(
            f"cannot write {out}: no folder {out.parent}", param_hint="--out"
        )
    if not cv2.haveImageWriter(str(out)):
        raise typer.BadParameter(
            f"cannot write {out}: expected a name ending in .png or .jpg",
            param_hint="--out",
        )
    settings = _settings(model=model)
    image_rgb = decode_image(
        image.read_bytes(), name=str(image), max_pixels=settings.max_image_pixels
    )
    segmenter = SegmentationModel.load(
        registry.resolve(settings.model, settings.models_dir)
    )
    (detections,) = segmenter.segment(
        [image_rgb],
        confidence=settings.confidence,
        class_agnostic=settings.class_agnostic_nms,
    )
    drawn = draw_detections(image_rgb, detections)
    try:
        written = cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    except cv2.error as exc:
        message = f"cannot write {out}: {exc}"
        raise typer.BadParameter(message, param_hint="--out") from exc
    if not written:
        raise typer.BadParameter(f"cannot write {out}", param_hint="--out")
    console.print(f"{len(detections)} detections drawn to {escape(str(out))}")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create or migrate the results database to the latest schema."""
    from segbatch.schema.db import upgrade

    settings = _settings(database_url=database_url)
    upgrade(settings.database_url)
    console.print("database is up to date")


def _warn_no_images(source: str) -> None:
    from segbatch.producer.listing import image_extensions_text

    console.print(
        f"[yellow]no images found in {escape(source)}: nothing was processed. "
        f"Images are files named {image_extensions_text()}.[/]"
    )


def _print_summary(summary: object) -> None:
    table = Table(show_header=False, box=None)
    for key, value in vars(summary).items():
        table.add_row(key.replace("_", " "), escape(str(value)))
    Console().print(table)


def _mount_model_commands() -> None:
    try:
        from segbatch.models.toolchain.cli import model_app
    except ImportError:  # the toolchain module is optional in a slim install
        return
    app.add_typer(model_app, name="model")


_mount_model_commands()


def main() -> None:
    try:
        app()
    except SegbatchError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(1)
