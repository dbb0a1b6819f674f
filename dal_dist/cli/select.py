"""`dal-dist select`: pick the ids to label next (topk, kcenter, hybrid, random, kcenter-init, powerbald,
softmax, softrank, badge, typiclust, density, cluster_margin, batchbald)."""

from __future__ import annotations

import json

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app


@app.command("select")
def select(
    strategy: str = typer.Option(..., "--strategy", help="topk, kcenter, hybrid, random, kcenter-init, "
                                 "powerbald, softmax, softrank, badge, typiclust, density, cluster_margin or "
                                 "batchbald."),
    k: int = typer.Option(..., "--k", help="How many ids to pick."),
    out: str = typer.Option(..., "--out", help="Output Parquet: `id` in pick order (+ radius/score); path or URI."),
    scores: str = typer.Option(None, "--scores", help="Scores dataset (output of `dal-dist score`); path or URI."),
    pool: str = typer.Option(None, "--pool", help="Raw image pool (kcenter-init, batchbald); path or URI."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="batchbald: the model re-run on its candidates."),
    mc_samples: int = typer.Option(None, "--mc-samples", help="batchbald: T shared dropout masks (default 20)."),
    labeled: str = typer.Option(None, "--labeled", help="Parquet/CSV file of labeled ids (existing centers)."),
    by: str = typer.Option(None, "--by", help="Score column for topk/hybrid/powerbald/softmax/softrank/density "
                           "(higher = more worth labeling; all but topk/hybrid default to bald); "
                           "cluster_margin (default margin)."),
    candidates: int = typer.Option(None, "--candidates", help="hybrid: top-M rows that k-center sees; "
                                   "cluster_margin/batchbald: top-M rows by margin/bald (default 10·k)."),
    beta: float = typer.Option(None, "--beta", help="powerbald/softmax/softrank: sampling exponent β >= 0 "
                               "(default 1; inf: top-k); density: exponent of the mean similarity (default 1)."),
    clusters: int = typer.Option(None, "--clusters", help="typiclust: the most k-means clusters (default 500); "
                                 "cluster_margin: clusters of the pool (default √N, at most 1,000)."),
    cluster_file: str = typer.Option(None, "--cluster-file", help="cluster_margin: (id, cluster) Parquet reused "
                                     "across rounds; written on first use."),
    seed: int = typer.Option(0, "--seed", min=0, help="random, the stochastic strategies and badge; k-center's "
                             "first center when nothing is labeled."),
    distributed: bool = typer.Option(False, "--distributed", help="kcenter, badge, typiclust, cluster_margin on Ray shard "
                                     "actors (same picks as one node)."),
    workers: int = typer.Option(2, "--workers", help="Shard actors with --distributed."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", help="kcenter --distributed: GPUs each shard "
                                          "actor requests (default: share the cluster's GPUs, none on a CPU "
                                          "cluster or with --device cpu)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda."),
    storage_dtype: str = typer.Option(None, "--storage-dtype",
                                      help="k-center storage: float32, float16, bfloat16 (default: as stored)."),
    address: str = typer.Option(None, "--address", help="Ray address with --distributed (default: local)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file (never an input)."),
) -> None:
    """Write the selection Parquet atomically; print a one-line JSON summary."""
    from dal_dist.ray_connect import connect, starts_local_cluster
    from dal_dist.selection import check_select_arguments, check_selection_out, write_selection
    from dal_dist.selection import select as run_select

    for flag, value, what in (("--out", out, "the selection Parquet file to write"),
                              ("--scores", scores, "a scores dataset"), ("--pool", pool, "a pool directory"),
                              ("--labeled", labeled, "a Parquet/CSV file of labeled ids"),
                              ("--checkpoint", checkpoint, "a model checkpoint file"),
                              ("--cluster-file", cluster_file, "the (id, cluster) Parquet file to reuse or write")):
        if value is not None:
            checks.nonempty(flag, value, what)
    check_select_arguments(strategy, k, seed=seed, workers=workers, device=device, storage_dtype=storage_dtype,
                           beta=beta, clusters=clusters, cluster_file=cluster_file, checkpoint=checkpoint,
                           mc_samples=mc_samples, distributed=distributed, gpus_per_worker=gpus_per_worker)
    inputs = (scores, pool, labeled, cluster_file, checkpoint)
    check_selection_out(out, inputs, overwrite)  # before any (possibly long) selection work
    if distributed:
        local = starts_local_cluster(address)
        checks.check_local_workers("--workers", workers, local)
        if local and gpus_per_worker:  # nothing would add the GPUs: the shards would wait forever
            from dal_dist.scoring.placement import check_fits_local_cluster, local_cluster_ceiling

            check_fits_local_cluster(local_cluster_ceiling(), workers, gpus_per_worker, started=False)
        connect(address)
    table = run_select(strategy, k, scores=scores, pool=pool, labeled=labeled, by=by, candidates=candidates,
                       seed=seed, distributed=distributed, workers=workers, device=device,
                       storage_dtype=storage_dtype, beta=beta, clusters=clusters, cluster_file=cluster_file,
                       checkpoint=checkpoint, mc_samples=mc_samples, gpus_per_worker=gpus_per_worker)
    write_selection(table, out, overwrite=overwrite, inputs=inputs)
    typer.echo(json.dumps({"strategy": strategy, "k": table.num_rows, "out": str(out)}))
