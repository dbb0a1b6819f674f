"""`dal-dist pool ...`: build a Parquet pool (ingest, synth) and inspect one (info)."""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Optional

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app
from dal_dist.errors import DalDistError

if TYPE_CHECKING:  # pyarrow/torch load only when a command runs
    from dal_dist.pool import IngestResult

# A synthetic 28x28 digit: at least this much memory while a chunk is made (float32 pixels and an elastic
# displacement field), and at least this much disk once compressed (measured: ~300 bytes; half of that).
SYNTH_BYTES_IN_MEMORY = 28 * 28 * 4 * 3
SYNTH_BYTES_ON_DISK = 150

pool_app = typer.Typer(no_args_is_help=True, help="Build and inspect Parquet image pools.")
app.add_typer(pool_app, name="pool")


class SourceFormat(str, Enum):
    mnist_idx = "mnist-idx"
    image_folder = "image-folder"
    image_list = "image-list"
    npz = "npz"


def _report(r: IngestResult, what: str) -> None:
    from dal_dist.fs import join

    rate = r.rows / r.seconds if r.seconds else 0.0
    typer.echo(f"{what}: {r.rows} rows in {len(r.files)} file(s) -> {r.out}; "
               f"{r.rejects} rejected (see {join(r.out, '_rejects.parquet')}); "
               f"{r.seconds:.1f} s, {rate:,.0f} images/s")


@pool_app.command()
def ingest(
    format: SourceFormat = typer.Option(..., "--format", help="Source format."),
    out: str = typer.Option(..., "--out", help="New (or empty) pool directory to write (a path or URI: file://, s3://, ...)."),
    images: Optional[str] = typer.Option(None, "--images", help="mnist-idx: image IDX file (.gz or raw)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="mnist-idx: label IDX file (optional)."),
    root: Optional[str] = typer.Option(None, "--root", help="image-folder: root with one sub-folder per class."),
    file: Optional[str] = typer.Option(None, "--file", help="npz: archive with `x` and optional `y`; "
                                       "image-list: CSV of `path[,label]` (paths relative to the CSV)."),
    unlabeled: bool = typer.Option(False, "--unlabeled", help="image-folder: sub-folders are not classes "
                                   "(every image under --root is an unlabeled row)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="image-folder, image-list: threads that "
                                          "read and check the files (default: one per CPU, at most 32)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="image-folder, image-list: a progress "
                                  "line on stderr about once a second, and a final one."),
) -> None:
    """Convert a dataset into a pool; rows that cannot be taken go to OUT/_rejects.parquet."""
    from dal_dist import pool

    checks.output_dir("--out", out, "a new or empty pool directory")
    for flag, given in (("--images", images), ("--labels", labels), ("--file", file)):
        if given is not None:
            checks.input_file(flag, given)
    if root is not None:
        checks.input_dir("--root", root, "an image folder")
    if unlabeled and format is not SourceFormat.image_folder:
        raise DalDistError(f"--unlabeled applies to --format image-folder, not {format.value}")
    if workers is not None and format not in (SourceFormat.image_folder, SourceFormat.image_list):
        raise DalDistError(f"--workers applies to --format image-folder and image-list, not {format.value}")
    if format is SourceFormat.mnist_idx:
        if images is None:
            raise DalDistError("--format mnist-idx needs --images FILE (and usually --labels FILE)")
        result = pool.ingest_mnist_idx(images, labels, out)
    elif format is SourceFormat.image_folder:
        if root is None:
            raise DalDistError("--format image-folder needs --root DIR")
        result = pool.ingest_image_folder(root, out, unlabeled=unlabeled, workers=workers, progress=progress)
    elif format is SourceFormat.image_list:
        if file is None:
            raise DalDistError("--format image-list needs --file CSV (lines `path[,label]`)")
        result = pool.ingest_image_list(file, out, workers=workers, progress=progress)
    else:
        if file is None:
            raise DalDistError("--format npz needs --file FILE")
        result = pool.ingest_npz(file, out)
    _report(result, "ingested")


@pool_app.command()
def synth(
    n: int = typer.Option(..., "--n", min=1, help="Number of images."),
    out: str = typer.Option(..., "--out", help="New (or empty) pool directory to write (a path or URI)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same bytes."),
    chunk_size: int = typer.Option(8192, "--chunk-size", min=1,
                                   help="Images per write (multiple of 1024); bounds memory."),
) -> None:
    """Write N randomly deformed (affine + elastic) MNIST digits with labels, for scale runs."""
    from dal_dist.pool import synth_pool

    checks.output_dir("--out", out, "a new or empty pool directory")
    checks.check_fits_memory(f"--chunk-size {chunk_size}", chunk_size * SYNTH_BYTES_IN_MEMORY)
    checks.check_fits_disk(f"--n {n}", n * SYNTH_BYTES_ON_DISK, out)
    _report(synth_pool(n, out, seed=seed, chunk_size=chunk_size, progress=True), "synthesised")


@pool_app.command()
def info(
    path: str = typer.Argument(..., help="Pool directory (or one Parquet file): a path or URI (file://, s3://, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate a pool and print rows, files, size, schema, image shape and label histogram."""
    from dal_dist.pool import pool_info

    checks.nonempty("PATH", path, "a pool directory or Parquet file")
    summary = pool_info(path)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    shape = summary["image_shape"]
    lines = [
        f"pool:        {summary['path']}",
        f"rows:        {summary['rows']:,}",
        f"files:       {summary['files']} ({summary['bytes'] / 2**20:,.1f} MiB)",
        f"image shape: {'x'.join(str(v) for v in shape.values()) if shape else 'varies / encoded'}",
        f"classes:     {summary['num_classes']}",
        f"rejects:     {summary['rejects']}",
        "schema:      " + ", ".join(f"{k}: {v}" for k, v in summary["schema"].items()),
    ]
    if summary["has_label"]:
        hist = summary["label_counts"]
        lines.append("labels:      " + ", ".join(f"{k}: {v}" for k, v in hist.items())
                     + (f" (+{summary['unlabeled_rows']} unlabeled)" if summary["unlabeled_rows"] else ""))
    typer.echo("\n".join(lines))
