"""`dal-dist report`: learning curves, labels-to-accuracy table and selection grids of runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dal_dist.cli.app import app


@app.command("report")
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories."),
    out: Path = typer.Option(..., "--out", help="Directory for the PNGs, curves.csv and summary.md."),
    targets: str = typer.Option("0.90,0.95", "--targets", help="Comma list of test accuracies."),
) -> None:
    """Compare runs: one PNG of curves, a markdown table, a grid of each round's picks."""
    from dal_dist.errors import DalDistError
    from dal_dist.driver.report import make_report

    try:
        ts = [float(t) for t in targets.split(",") if t.strip()]
    except ValueError as e:
        raise DalDistError(f"--targets {targets!r}: expected a comma list of accuracies in (0, 1]") from e
    typer.echo(json.dumps(make_report(run_dirs, out, ts)))
