"""Experiments: a grid of (strategy, seed) runs, each a resumable run directory, and the curves they leave.

An experiment job (jobs/reproduce_gal2017.py, jobs/large_batch.py) builds one run config per (strategy,
seed) and hands them here: every run continues where it stopped when the job is started again, and the
curves can be read back (for tables and plots) while runs are still going.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dal_dist.driver.report import Curve, load_curve
from dal_dist.errors import DalDistError

WALL_FILE = "wall_s.json"  # a run's accumulated wall time over every invocation of the job


def run_one(name: str, config: dict[str, Any], workdir: str | os.PathLike, threads: int,
            gpu: bool = False) -> dict[str, Any]:
    """Run (or resume) one run to its end in `workdir/name`; adds this call's wall time to its wall_s.json."""
    import torch

    from dal_dist.atomic import write_json_atomic
    from dal_dist.driver.config import parse_config
    from dal_dist.driver.rounds import run

    torch.set_num_threads(threads)
    rd = Path(workdir) / name
    t = time.time()
    # An existing run continues under its stored config; --gpu / no --gpu decides where the rest of it goes.
    existing = (rd / "config.json").exists()
    run(None if existing else parse_config(config), rd, resume=existing, log=lambda m: None,
        use_gpu=gpu if existing else None)
    wall_file = rd / WALL_FILE
    prev = json.loads(wall_file.read_text())["wall_s"] if wall_file.exists() else 0.0
    wall = prev + time.time() - t
    write_json_atomic(wall_file, {"wall_s": round(wall, 1)})
    return {"run": name, "seconds": round(time.time() - t, 1), "wall_s_total": round(wall, 1)}


def run_grid(runs: Sequence[tuple[str, dict[str, Any]]], workdir: str | os.PathLike, jobs: int = 1,
             threads: int | None = None, gpu: bool = False, emit: Callable[[str], None] = print) -> None:
    """Every (name, config) to its end, in order with `jobs` 1, else `jobs` processes of one torch thread each."""
    if jobs <= 1:
        import torch

        for name, cfg in runs:
            emit(json.dumps(run_one(name, cfg, workdir, threads or torch.get_num_threads(), gpu)))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_one, name, cfg, workdir, 1, gpu) for name, cfg in runs]
        for f in as_completed(futs):
            emit(json.dumps(f.result()))


def grid_curves(workdir: str | os.PathLike, strategies: Sequence[str]) -> list[tuple[Path, Curve]]:
    """(run directory, curve) of every run under `workdir` of one of `strategies` with at least two points."""
    dirs = [d for d in sorted(Path(workdir).glob("*-seed*")) if (d / "config.json").exists()]
    out = []
    for d in dirs:
        try:
            c = load_curve(d, name=d.name)
        except DalDistError:  # a run that has not evaluated a round yet has no curve
            continue
        if c.strategy in strategies and len(c.labels) > 1:
            out.append((d, c))
    return out


def run_state_rows(pairs: Sequence[tuple[Path, Curve]]) -> list[str]:
    """Markdown rows `| run | state | labels | last test accuracy | step time (s) |` of each run."""
    from dal_dist.driver.status import run_status

    rows = ["| run | state | labels | last test accuracy | step time (s) |", "|---|---|---|---|---|"]
    for d, c in pairs:
        st = run_status(d)
        stop = json.loads((d / "config.json").read_text())["config"].get("stop_at_accuracy")
        state = (f"reached its stop accuracy {stop}" if st["target_reached_round"]
                 else "complete" if st["complete"] else f"in progress (next: round {st['next']['round']})")
        wall = round(sum(sum(json.loads(t.read_text()).values()) for t in (d / "rounds").glob("*/timings.json")))
        rows.append(f"| {d.name} | {state} | {c.labels[-1]} | {c.accuracy[-1]:.4f} | {wall} |")
    return rows


def grid_parser(description: str, name: str, strategies: Sequence[str], *, max_labels: int, epochs: int,
                mnist_dir: Path) -> Any:
    """The options every experiment job takes (where, which runs, how long, how parallel); the job adds its own."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", type=Path, default=mnist_dir)
    p.add_argument("--workdir", type=Path, default=Path("runs") / name)
    p.add_argument("--results", type=Path, default=Path("results") / name)
    p.add_argument("--strategies", default=",".join(strategies))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-labels", type=int, default=max_labels)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, one torch thread each")
    p.add_argument("--threads", type=int, default=None, help="torch threads with --jobs 1 (default: torch's)")
    p.add_argument("--gpu", action="store_true", help="train, score and evaluate on this process's CUDA device")
    p.add_argument("--report-only", action="store_true")
    return p


def write_curves(workdir: str | os.PathLike, strategies: Sequence[str], results: Path,
                 title: str) -> list[tuple[Path, Curve]]:
    """curves.csv and learning_curves.png of a grid's runs so far, in `results`; returns (run dir, curve) pairs."""
    from dal_dist.driver.report import plot_curves, write_curves_csv

    pairs = grid_curves(workdir, strategies)
    curves = [c for _, c in pairs]
    results.mkdir(parents=True, exist_ok=True)
    write_curves_csv(curves, results / "curves.csv")
    plot_curves(curves, results / "learning_curves.png", title)
    return pairs
