"""`dal-dist embed`: backbone features of every pool row, once, for rounds that train and score only a head."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app


@app.command("embed")
def embed(
    pool: str = typer.Option(..., "--pool", help="Pool directory (Parquet): a path or URI (file://, s3://, ...)."),
    out: str = typer.Option(..., "--out", help="Output directory for `id, embedding` (a path or URI)."),
    model: str = typer.Option(None, "--model", help="Backbone by name: resnet18, resnet34, resnet50, efficientnet_b0, "
                              "convnext_tiny, vit_b_16, mnist-cnn, resnet18-small, or a plug-in "
                              "package.module:factory (imported from the current directory)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Or: the backbone of a trained checkpoint."),
    weights: str = typer.Option(None, "--weights", help="Local torchvision state_dict of --model's backbone "
                                "(torch.save(model.state_dict(), FILE)). Never downloads."),
    image_size: int = typer.Option(None, "--image-size", min=8, max=4096,
                                   help="Input side in pixels (default per model: 224 for torchvision)."),
    normalize: str = typer.Option(None, "--normalize", help="imagenet, half or none (default per model)."),
    embedding_dtype: str = typer.Option("float16", "--embedding-dtype", help="float16 or float32."),
    workers: int = typer.Option(1, "--workers", help="Embedding actors."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker",
                                          help="GPUs per actor (fractions allowed; default: share the "
                                               "cluster's GPUs, none on a CPU cluster; 0 forces CPU)."),
    cpus_per_worker: float = typer.Option(None, "--cpus-per-worker",
                                          help="CPUs reserved per actor (default: share the cluster, keep room for reads)."),
    threads_per_worker: int = typer.Option(None, "--threads-per-worker", help="torch threads per actor."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per batch."),
    executor: str = typer.Option("ray", "--executor", help="ray (actors) or local (this process, no Ray)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing embeddings output."),
    address: str = typer.Option(None, "--address", help="Ray address (default: local or RAY_ADDRESS)."),
) -> None:
    """Write `id, embedding` for every pool row; print a JSON summary as the last line."""
    from dal_dist.scoring import embed_pool

    checks.nonempty("--pool", pool, "a pool directory")
    checks.nonempty("--out", out, "an output directory")
    if weights is not None:
        weights = str(checks.input_file("--weights", weights, "a torchvision state_dict file"))
    if checkpoint is not None:
        checkpoint = checks.input_file("--checkpoint", checkpoint, "a checkpoint file")
    if normalize is not None:
        checks.nonempty("--normalize", normalize, "imagenet, half or none")
    summary = embed_pool(pool, out, model=model, checkpoint=checkpoint, weights=weights, image_size=image_size,
                         normalize=normalize, embedding_dtype=embedding_dtype, workers=workers,
                         gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                         threads_per_worker=threads_per_worker, batch_size=batch_size, overwrite=overwrite,
                         executor=executor, address=address)
    typer.echo(f"embedded {summary.rows} rows ({summary.rejects} rejects) in {summary.seconds:.1f}s, "
               f"{summary.images_per_s:.0f} images/s -> {summary.out}", err=True)
    typer.echo(json.dumps(dataclasses.asdict(summary)))
