"""`dal-dist bench ...`: benchmarks that print one JSON line per result."""

from __future__ import annotations

import typer

from dal_dist.cli.app import app

bench_app = typer.Typer(help="Benchmarks: one JSON line per result.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("scoring")
def scoring(
    model: str = typer.Option("resnet18", "--model"),
    image_size: int = typer.Option(32, "--image-size"),
    n: int = typer.Option(1024, "--n", help="Images for the in-process forward/BALD comparison."),
    mc_samples: int = typer.Option(20, "--mc-samples"),
    batch_size: int = typer.Option(256, "--batch-size"),
    pipeline_n: int = typer.Option(16384, "--pipeline-n", help="Pool size for the Ray pipeline run."),
    workers: int = typer.Option(1, "--workers"),
    repeats: int = typer.Option(3, "--repeats"),
    seed: int = typer.Option(0, "--seed"),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline"),
) -> None:
    """forward_img_s, bald_img_s, pipeline_img_s and pipeline_startup_s in one run."""
    from dal_dist.benchmarks import scoring as bench

    bench.main(model=model, image_size=image_size, n=n, mc_samples=mc_samples, batch_size=batch_size,
               pipeline_n=pipeline_n, workers=workers, repeats=repeats, seed=seed, pipeline=pipeline)


@bench_app.command("kcenter")
def kcenter(
    n: int = typer.Option(1_000_000, "--n", help="Candidate rows (seeded float32 Gaussian)."),
    dim: int = typer.Option(128, "--dim"),
    labeled: int = typer.Option(1000, "--labeled", help="Labeled rows (existing centers)."),
    k: int = typer.Option(200, "--k", help="Picks timed for dal-dist."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32, float16 or bfloat16."),
    ref_picks: int = typer.Option(5, "--ref-picks", help="Picks timed for the scikit-learn reference (0 = skip)."),
    seed: int = typer.Option(0, "--seed"),
    sharded_workers: int = typer.Option(0, "--sharded-workers",
                                        help="Instead: distributed vs single node on N rows with this many Ray actors."),
) -> None:
    """init_s, s_per_pick vs the scikit-learn reference, read bandwidth bound and peak RSS, one JSON line."""
    from dal_dist.benchmarks import kcenter as bench

    if sharded_workers > 0:
        bench.main_sharded(n=n, dim=dim, labeled=labeled, k=k, workers=sharded_workers, seed=seed)
        return
    bench.main(n=n, dim=dim, labeled=labeled, k=k, dtype=dtype, ref_picks=ref_picks, seed=seed)


@bench_app.command("soak")
def soak(
    rounds: int = typer.Option(20, "--rounds", help="Consecutive active-learning rounds."),
    pool: int = typer.Option(2000, "--pool", help="Synthetic pool size (dal_dist.pool.synth)."),
    kill_prob: float = typer.Option(0.5, "--kill-prob", help="Chance that a round's scoring loses an actor (SIGKILL)."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(2, "--workers", help="Scoring actors."),
) -> None:
    """Rounds under random scoring-actor kills: per round ok / ledger exact / driver RSS, then a summary line."""
    from dal_dist.benchmarks import soak as bench

    bench.main(rounds=rounds, pool_rows=pool, kill_prob=kill_prob, seed=seed, workers=workers)
