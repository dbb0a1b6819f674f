"""`dal-dist run`, `dal-dist status`, `dal-dist labels import`: thin calls into dal_dist.driver."""

from __future__ import annotations

import json

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app
from dal_dist.errors import DalDistError

labels_app = typer.Typer(no_args_is_help=True, help="Human labels: import a labeled file into a run's ledger.")
app.add_typer(labels_app, name="labels")


@app.command("run")
def run(
    config: str = typer.Option(None, "--config", help="Run config YAML (with --resume: checked against the run's)."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory (overrides `run_dir` in the config); "
                                                         "a local path or file:// URI."),
    resume: str = typer.Option(None, "--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-step progress lines."),
    gpu: bool = typer.Option(None, "--gpu/--no-gpu", help="With --resume: continue on (or off) a GPU "
                             "whatever the run started with (the config and its hash stay)."),
) -> None:
    """Run active-learning rounds (train → evaluate → score → select → label) until done or waiting for labels."""
    from dal_dist.driver import load_config
    from dal_dist.driver import run as run_loop
    from dal_dist.driver.state import local_run_dir

    for flag, value, what in (("--config", config, "a run config YAML file"), ("--run-dir", run_dir, "a run directory"),
                              ("--resume", resume, "a run directory")):
        if value is not None:
            checks.nonempty(flag, value, what)
    cfg = load_config(config) if config is not None else None
    if resume is not None:
        if run_dir is not None and local_run_dir(run_dir) != local_run_dir(resume):
            raise DalDistError(f"--resume {resume} and --run-dir {run_dir} name different directories")
        target = resume
    else:
        if cfg is None:
            raise DalDistError("give --config FILE to start a run, or --resume RUN_DIR to continue one")
        target = run_dir or cfg.run_dir
        if target is None:
            raise DalDistError(f"{config}: no run directory: set `run_dir` in the config or pass --run-dir")
    log = (lambda s: None) if quiet else (lambda s: typer.echo(s, err=True))
    if gpu is not None and resume is None:
        raise DalDistError("--gpu/--no-gpu applies to --resume; a new run sets train.use_gpu in its config")
    outcome = run_loop(cfg, target, resume=resume is not None, log=log, use_gpu=gpu)
    typer.echo(outcome.message)


@app.command("status")
def status(
    run_dir: str = typer.Argument(..., help="Run directory (a local path or file:// URI)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Rounds done, labels used, latest metrics, and what happens next."""
    from dal_dist.driver import run_status

    checks.nonempty("RUN_DIR", run_dir, "a run directory")
    st = run_status(run_dir)
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    m = st["latest_metrics"] or {}
    acc = m.get("test_accuracy")
    typer.echo(f"run {st['run_dir']} ({st['strategy']}, {st['oracle']} oracle)"
               f"{' [a driver holds the lock]' if st['locked'] else ''}")
    typer.echo(f"rounds completed: {st['rounds_completed']} / {st['rounds_total']}; labels in the ledger: {st['labels']}")
    if m:
        typer.echo(f"latest model: round {m.get('round')}, trained on {m.get('labels')} labels, test accuracy "
                   f"{'n/a' if acc is None else f'{acc:.4f}'}")
    typer.echo(f"next: {st['next_action']}")


@labels_app.command("import")
def labels_import(
    file: str = typer.Argument(..., help="CSV (id,label) or a Label Studio export (JSON, JSON-MIN or CSV)."),
    run_dir: str = typer.Option(..., "--run-dir", help="Run directory waiting for labels."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Record the labeled images even when some "
                                       "were skipped or left unlabeled (they return to the unlabeled pool)."),
) -> None:
    """Validate a label file against the pending round and append it to the ledger (all rows or none)."""
    from dal_dist.driver import import_labels

    checks.input_file("FILE", file, "a label file (CSV id,label or a Label Studio export)")
    checks.nonempty("--run-dir", run_dir, "a run directory waiting for labels")
    res = import_labels(run_dir, file, allow_partial=allow_partial)
    for c in res["conflicts"]:
        answers = ", ".join(f"{a['annotator'] or '?'}={a['label']}" for a in c["answers"])
        typer.echo(f"id {c['id']}: annotators disagree ({answers}); kept the latest: {c['label']}", err=True)
    if res["unlabeled"]:
        typer.echo(f"{len(res['unlabeled'])} selected image(s) left unlabeled (back in the unlabeled pool): "
                   f"{res['unlabeled'][:20]}", err=True)
    typer.echo(f"round {res['round']}: {res['labels']} labels added to {res['ledger']} ({res['format']}); "
               f"continue with `dal-dist run --resume {run_dir}`")
