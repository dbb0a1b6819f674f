"""`dal-dist score`: MC-dropout scoring of a Parquet pool on Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app


@app.command("score")
def score(
    pool: str = typer.Option(..., "--pool", help="Pool directory (Parquet): a path or URI (file://, s3://, ...)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Model checkpoint."),
    out: str = typer.Option(..., "--out", help="Output directory for the scores dataset (a path or URI)."),
    acquisition: str = typer.Option("bald,entropy,margin,least_confidence,variation_ratio,mean_std",
                                    "--acquisition", help="Comma list of acquisition functions."),
    mc_samples: int = typer.Option(20, "--mc-samples", help="T, MC-dropout samples of the head."),
    workers: int = typer.Option(1, "--workers", help="Scoring actors."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker",
                                          help="GPUs per actor (fractions allowed; default: share the "
                                               "cluster's GPUs, none on a CPU cluster; 0 forces CPU)."),
    cpus_per_worker: float = typer.Option(None, "--cpus-per-worker",
                                          help="CPUs reserved per actor (default: share the cluster, keep room for reads)."),
    threads_per_worker: int = typer.Option(None, "--threads-per-worker", help="torch threads per actor."),
    labeled: str = typer.Option(None, "--labeled", help="Parquet/CSV file with an `id` column (a path or URI)."),
    embed_labeled: bool = typer.Option(False, "--embed-labeled", help="Keep labeled rows (embedding only)."),
    embedding: str = typer.Option("head", "--embedding", help="head (penultimate) or backbone features."),
    embedding_dtype: str = typer.Option("float16", "--embedding-dtype", help="float16 or float32."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per scoring batch."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the dropout masks."),
    start_timeout: float = typer.Option(None, "--start-timeout", min=1, max=7 * 24 * 3600,
                                        help="Seconds to wait for the first scored batch (e.g. for an autoscaler "
                                             "to add GPU nodes) before giving up; default: wait, saying what for."),
    keep_probs: bool = typer.Option(False, "--keep-probs", help="Also write `probs`: the mean softmax with "
                                    "dropout off, C floats per row (what `select --strategy badge` needs)."),
    precision: str = typer.Option("auto", "--precision", help="Forward passes in bf16, fp16 or fp32 (auto: bf16 "
                                  "on a GPU, fp32 on CPU); scores are computed in float32 either way."),
    decode: str = typer.Option("auto", "--decode", help="Where JPEG rows are decoded: cpu (PIL, row by row), "
                               "device (torchvision, batched, on each actor's GPU or CPU) or auto (device on a "
                               "GPU, cpu otherwise); other rows always take the CPU path."),
    overlap: str = typer.Option("auto", "--overlap", help="on: two batches per actor at a time, one decoded and "
                                "copied while the model runs the other; off; auto: on for GPU actors."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    address: str = typer.Option(None, "--address", help="Ray address (default: local or RAY_ADDRESS)."),
) -> None:
    """Score every unlabeled image; print a JSON summary as the last line."""
    from dal_dist.scoring import score_pool
    from dal_dist.scoring.scorer import check_overlap

    checks.nonempty("--pool", pool, "a pool directory")
    checks.nonempty("--out", out, "an output directory")
    if labeled is not None:
        checks.nonempty("--labeled", labeled, "a Parquet/CSV file with an `id` column")
    summary = score_pool(pool, checkpoint, out, acquisitions=acquisition, mc_samples=mc_samples,
                         workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                         threads_per_worker=threads_per_worker, labeled=labeled, embed_labeled=embed_labeled,
                         embedding_source=embedding, embedding_dtype=embedding_dtype, batch_size=batch_size,
                         seed=seed, overwrite=overwrite, address=address, keep_probs=keep_probs,
                         start_timeout=start_timeout, precision=precision, decode=decode,
                         overlap=check_overlap(overlap))
    typer.echo(f"scored {summary.rows} rows ({summary.rejects} rejects) in {summary.seconds:.1f}s, "
               f"{summary.images_per_s:.0f} images/s -> {summary.out}", err=True)
    typer.echo(json.dumps(dataclasses.asdict(summary)))
