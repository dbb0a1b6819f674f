"""`dal-dist report`: learning curves, labels-to-accuracy table and selection grids of runs (files and/or HTML)."""

from __future__ import annotations

import json

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app


@app.command("report")
def report(
    run_dirs: list[str] = typer.Argument(..., help="One or more run directories."),
    out: str = typer.Option(None, "--out", help="Directory for the PNGs, curves.csv and summary.md."),
    html: str = typer.Option(None, "--html", help="One self-contained HTML file (charts, tables, picked images, "
                                                  "timings, configs; opens offline)."),
    targets: str = typer.Option("0.90,0.95", "--targets", help="Comma list of test accuracies."),
) -> None:
    """Compare runs: a PNG of curves, a markdown table, a grid of each round's picks; or all of it in one HTML page."""
    from dal_dist.errors import DalDistError

    try:
        ts = [float(t) for t in targets.split(",")]
    except ValueError:
        ts = []
    if not ts or not all(0 < t <= 1 for t in ts):
        raise DalDistError(f"--targets {targets!r}: expected a comma list of accuracies in (0, 1]")
    if out is None and html is None:
        raise DalDistError("give --out DIR (PNGs, curves.csv, summary.md) and/or --html FILE (one HTML page)")
    for d in run_dirs:
        checks.input_dir("RUN_DIRS", d, "a run directory")
    if out is not None:
        checks.output_dir("--out", out, "a directory for the report")
    if html is not None:
        from dal_dist.driver.report_html import check_html_out

        check_html_out(html, "--html")
    written: dict[str, str] = {}
    if out is not None:
        from dal_dist.driver.report import make_report

        written.update(make_report(run_dirs, out, ts))
    if html is not None:
        from dal_dist.driver.report_html import write_html_report

        written["html"] = str(write_html_report(run_dirs, html, ts))
    typer.echo(json.dumps(written))

