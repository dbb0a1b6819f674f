"""`dal-dist bench ...`: benchmarks that print one JSON line per result."""

from __future__ import annotations

import tempfile

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app
from dal_dist.cli.pool import SYNTH_BYTES_ON_DISK
from dal_dist.errors import DalDistError

MAX_REPEATS = 1000
KCENTER_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}  # storage dtype: bytes per value
SOAK_INITIAL, SOAK_BUDGET = 20, 10  # labels of round 0 and of each round (benchmarks.soak.run's defaults)

bench_app = typer.Typer(help="Benchmarks: one JSON line per result.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("scoring")
def scoring(
    model: str = typer.Option("resnet18-small", "--model"),
    image_size: int = typer.Option(32, "--image-size", min=8, max=4096),
    n: int = typer.Option(1024, "--n", min=1, help="Images for the in-process forward/BALD comparison."),
    mc_samples: int = typer.Option(20, "--mc-samples", min=2),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    pipeline_n: int = typer.Option(16384, "--pipeline-n", min=1, help="Pool size for the Ray pipeline run."),
    workers: int = typer.Option(1, "--workers", min=1),
    repeats: int = typer.Option(3, "--repeats", min=1, max=MAX_REPEATS),
    seed: int = typer.Option(0, "--seed", min=0),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (the GPU when there is one)."),
    precision: str = typer.Option("auto", "--precision", help="bf16, fp16, fp32 or auto (bf16 on a GPU)."),
    source: str = typer.Option("raw", "--source", help="raw (model-size pixels, no decode) or jpeg (JPEG photos "
                               "around 1.15x the image size, decoded in every measurement)."),
    decode: str = typer.Option("auto", "--decode", help="With --source jpeg: cpu (PIL), device (torchvision on "
                               "the scoring device) or auto (device on a GPU)."),
    overlap: str = typer.Option("auto", "--overlap", help="on/off/auto: decode and copy of batch i+1 beside compute "
                                "of batch i (BALD with --source jpeg, and the pipeline); auto: on a GPU."),
) -> None:
    """forward_img_s, bald_img_s, pipeline_img_s and pipeline_startup_s in one run (decode_img_s with jpeg)."""
    import tempfile

    from dal_dist.ray_connect import starts_local_cluster
    from dal_dist.scoring.scorer import MAX_MC_SAMPLES

    if mc_samples > MAX_MC_SAMPLES:
        raise DalDistError(f"--mc-samples {mc_samples}: expected at most {MAX_MC_SAMPLES}")
    if source not in ("raw", "jpeg"):
        raise DalDistError(f"--source must be raw or jpeg, got {source!r}")
    pixels = image_size * image_size * (1 if model == "mnist-cnn" else 3)
    checks.check_fits_memory(f"--n {n} images of {image_size}x{image_size}", n * pixels)
    checks.check_fits_memory(f"--batch-size {batch_size} (float32 model inputs)", batch_size * pixels * 4)
    checks.check_fits_disk(f"--pipeline-n {pipeline_n} images of {image_size}x{image_size}", pipeline_n * pixels,
                           tempfile.gettempdir())
    checks.check_local_workers("--workers", workers, starts_local_cluster(None))
    from dal_dist.benchmarks import scoring as bench

    from dal_dist.device import torch_device
    from dal_dist.scoring.scorer import check_decode, check_overlap, check_precision

    check_decode(decode)
    dev = torch_device(None if device == "auto" else device)
    bench.main(model=model, image_size=image_size, n=n, mc_samples=mc_samples, batch_size=batch_size,
               pipeline_n=pipeline_n, workers=workers, repeats=repeats, seed=seed, pipeline=pipeline,
               device=str(dev), precision=check_precision(precision), source=source, decode=decode,
               overlap=check_overlap(overlap))


@bench_app.command("kcenter")
def kcenter(
    n: int = typer.Option(1_000_000, "--n", min=1, help="Candidate rows (seeded float32 Gaussian)."),
    dim: int = typer.Option(128, "--dim", min=1),
    labeled: int = typer.Option(1000, "--labeled", min=0, help="Labeled rows (existing centers)."),
    k: int = typer.Option(200, "--k", min=1, help="Picks timed for dal-dist."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32, float16 or bfloat16."),
    ref_picks: int = typer.Option(5, "--ref-picks", min=0,
                                  help="Picks timed for the scikit-learn reference (0 = skip)."),
    seed: int = typer.Option(0, "--seed", min=0),
    sharded_workers: int = typer.Option(0, "--sharded-workers", min=0,
                                        help="Instead: distributed vs single node on N rows with this many Ray actors."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (the GPU when there is one)."),
    loop: str = typer.Option("auto", "--loop", help="auto (on the device on CUDA, NumPy on CPU), host or device."),
) -> None:
    """init_s, s_per_pick vs the scikit-learn reference, read bandwidth bound and peak RSS, one JSON line."""
    from dal_dist.ray_connect import starts_local_cluster

    if dtype not in KCENTER_DTYPES:
        raise DalDistError(f"--dtype {dtype!r}: expected one of {', '.join(KCENTER_DTYPES)}")
    if k > n:
        raise DalDistError(f"--k {k}: more picks than the --n {n} candidate rows")
    if ref_picks > k:
        raise DalDistError(f"--ref-picks {ref_picks}: the reference is compared with dal-dist's first picks; "
                           f"expected at most --k {k}")
    itemsize = 4 if sharded_workers > 0 else KCENTER_DTYPES[dtype]
    checks.check_fits_memory(f"--n {n} + --labeled {labeled} rows x --dim {dim}", (n + labeled) * dim * itemsize)
    from dal_dist.benchmarks import kcenter as bench

    if sharded_workers > 0:
        checks.check_local_workers("--sharded-workers", sharded_workers, starts_local_cluster(None))
        bench.main_sharded(n=n, dim=dim, labeled=labeled, k=k, workers=sharded_workers, seed=seed)
        return
    from dal_dist.device import torch_device
    from dal_dist.selection.kcenter import LOOPS

    if loop not in LOOPS:
        raise DalDistError(f"--loop {loop!r}: expected one of {', '.join(LOOPS)}")
    dev = torch_device(None if device == "auto" else device)
    bench.main(n=n, dim=dim, labeled=labeled, k=k, dtype=dtype, ref_picks=ref_picks, seed=seed, device=str(dev),
               loop=loop)


@bench_app.command("soak")
def soak(
    rounds: int = typer.Option(20, "--rounds", min=1, help="Consecutive active-learning rounds."),
    pool: int = typer.Option(2000, "--pool", min=1, help="Synthetic pool size (dal_dist.pool.synth)."),
    kill_prob: float = typer.Option(0.5, "--kill-prob", min=0.0, max=1.0,
                                    help="Chance that a round's scoring loses an actor (SIGKILL)."),
    seed: int = typer.Option(0, "--seed", min=0),
    workers: int = typer.Option(2, "--workers", min=1, help="Scoring actors."),
) -> None:
    """Rounds under random scoring-actor kills: per round ok / ledger exact / driver RSS, then a summary line."""
    import tempfile

    from dal_dist.ray_connect import starts_local_cluster

    need = SOAK_INITIAL + SOAK_BUDGET * rounds
    if pool < need:
        raise DalDistError(f"--pool {pool}: {rounds} rounds label {need} images ({SOAK_INITIAL} initial + "
                           f"{SOAK_BUDGET} per round); expected --pool >= {need}")
    checks.check_fits_disk(f"--pool {pool}", pool * SYNTH_BYTES_ON_DISK, tempfile.gettempdir())
    checks.check_local_workers("--workers", workers, starts_local_cluster(None))
    from dal_dist.benchmarks import soak as bench

    bench.main(rounds=rounds, pool_rows=pool, kill_prob=kill_prob, seed=seed, workers=workers)


@bench_app.command("select")
def select(
    n: int = typer.Option(100_000, "--n", min=1, help="Candidate rows (seeded synthetic scores/embeddings/probs)."),
    k: int = typer.Option(100, "--k", min=1, help="Batch size picked."),
    dim: int = typer.Option(64, "--dim", min=1, help="Embedding width."),
    classes: int = typer.Option(10, "--classes", min=2, help="Classes of the probabilities (badge)."),
    strategy: str = typer.Option(None, "--strategy", help="Comma list (default: every benchmarked strategy)."),
    seed: int = typer.Option(0, "--seed", min=0),
    distributed: int = typer.Option(None, "--distributed", min=1, help="Instead: one node vs this many Ray shard "
                                    "actors from a Parquet scores dataset (badge, typiclust, cluster_margin)."),
) -> None:
    """Per strategy: seconds and peak RSS of one batch pick, one JSON line each (each in its own process)."""
    from dal_dist.benchmarks import select as bench

    known = bench.SHARDED if distributed is not None else bench.BENCH_STRATEGIES
    names = tuple(s.strip() for s in strategy.split(",")) if strategy is not None else known
    unknown = [s for s in names if s not in known]
    if unknown:
        raise DalDistError(f"--strategy {','.join(unknown)}: expected names from {', '.join(known)}"
                           + (" (with --distributed)" if distributed is not None else ""))
    if k > n:
        raise DalDistError(f"--k {k}: more picks than the --n {n} candidate rows")
    checks.check_fits_memory(f"--n {n} rows x (--dim {dim} + --classes {classes})", 2 * n * (dim + classes + 4) * 4)
    if distributed is not None:
        from dal_dist.ray_connect import starts_local_cluster

        checks.check_local_workers("--distributed", distributed, starts_local_cluster(None))
        bench.main_sharded(names, n=n, k=k, dim=dim, classes=classes, workers=distributed, seed=seed)
        return
    bench.main(names, n=n, k=k, dim=dim, classes=classes, seed=seed)


@bench_app.command("round")
def round_(
    n: int = typer.Option(1_000_000, "--n", min=2, help="Cached embeddings (seeded synthetic clusters, float16)."),
    dim: int = typer.Option(512, "--dim", min=1, max=65_536, help="Embedding width."),
    labeled: int = typer.Option(10_000, "--labeled", min=1, help="Labeled rows the head trains on."),
    k: int = typer.Option(1000, "--k", min=1, help="Batch size picked."),
    mc_samples: int = typer.Option(20, "--mc-samples", min=2, max=1000, help="T, head samples per row."),
    strategy: str = typer.Option("bald", "--strategy", help="bald (top-k), kcenter, or a comma list."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """One frozen-backbone round over N cached embeddings: train_s, score_s, select_s, round_s, peak RSS."""
    from dal_dist.benchmarks import round as bench

    names = tuple(s.strip() for s in strategy.split(","))
    unknown = [s for s in names if s not in bench.ROUND_STRATEGIES]
    if unknown:
        raise DalDistError(f"--strategy {','.join(unknown)}: expected names from {', '.join(bench.ROUND_STRATEGIES)}")
    if labeled + k > n:
        raise DalDistError(f"--labeled {labeled} + --k {k}: more than the --n {n} rows")
    checks.check_fits_disk(f"--n {n} x --dim {dim} float16 embeddings", 2.5 * n * dim * 2, tempfile.gettempdir())
    checks.check_fits_memory(f"--n {n} x --dim {dim}", 4 * n * dim * 2)
    bench.main(n=n, dim=dim, labeled=labeled, k=k, mc_samples=mc_samples, strategies=names, seed=seed)
