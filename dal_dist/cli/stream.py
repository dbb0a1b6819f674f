"""`dal-dist stream`: stream-based selective sampling over a growing Parquet directory."""

from __future__ import annotations

import dataclasses
import json

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app


@app.command("stream")
def stream(
    source: str = typer.Option(..., "--source", help="Directory that receives pool-format Parquet files."),
    checkpoint: str = typer.Option(..., "--checkpoint", help="Model checkpoint that scores arriving items."),
    out: str = typer.Option(..., "--out", help="Output directory (decisions, selected ids, state; resumable)."),
    budget: int = typer.Option(..., "--budget", help="Labeling budget B: never more labels than this."),
    expected: int = typer.Option(None, "--expected", help="Expected stream length N (target rate B/N)."),
    rate: float = typer.Option(None, "--rate", help="Target labeling rate instead of --expected (N = B/rate)."),
    acquisition: str = typer.Option("bald", "--acquisition", help="The one acquisition score to threshold."),
    mc_samples: int = typer.Option(20, "--mc-samples", help="T, MC-dropout samples of the head."),
    poll_seconds: float = typer.Option(2.0, "--poll-seconds", help="Seconds between directory scans."),
    idle_timeout: float = typer.Option(None, "--idle-timeout",
                                       help="Stop after this many seconds without new data (default: follow forever)."),
    oracle: str = typer.Option("none", "--oracle", help="simulated: write labels/ from the files' `label` column."),
    window: int = typer.Option(None, "--window", help="Recent scores the threshold quantile uses (default ~20·N/B)."),
    warmup: int = typer.Option(None, "--warmup", help="Items observed before the first quantile decision."),
    slack: int = typer.Option(None, "--slack", help="Labels allowed off the even schedule B·t/N (default 5% of B)."),
    bad_files: str = typer.Option("skip", "--bad-files",
                                  help="skip: record a corrupt/truncated file in the state and go on; error: stop."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per scoring batch."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the dropout masks."),
    threads: int = typer.Option(None, "--threads", help="torch threads."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Score each arriving item once; label or skip it against a budget-calibrated threshold. JSON summary last."""
    from dal_dist.errors import DalDistError
    from dal_dist.stream import StreamSelector

    if (expected is None) == (rate is None):
        raise DalDistError("give exactly one of --expected N or --rate R")
    checks.input_dir("--source", source, "a directory that receives pool-format Parquet files")
    checks.input_file("--checkpoint", checkpoint, "a model checkpoint file")
    checks.output_dir("--out", out, "a stream output directory")
    selector = StreamSelector(out, checkpoint, budget=budget, expected=expected, rate=rate, acquisition=acquisition,
                              mc_samples=mc_samples, seed=seed, batch_size=batch_size, window=window,
                              warmup=warmup, slack=slack, oracle=oracle, bad_files=bad_files, threads=threads,
                              device=device)
    summary = selector.run_directory(source, poll_seconds=poll_seconds, idle_timeout=idle_timeout)
    typer.echo(f"stream: labeled {summary.labeled}/{summary.budget} of {summary.seen} items seen "
               f"({summary.stopped}, {len(summary.rejected_files)} rejected files) -> {summary.out}", err=True)
    typer.echo(json.dumps(dataclasses.asdict(summary)))
