"""Round benchmark: one frozen-backbone round over N cached embeddings (train head → score → select).

Synthetic clustered embeddings (one Gaussian cluster per class, float16) are written once, untimed, in
the `dal-dist embed` format; the round then runs in a child process so that its `peak_rss_bytes` is the
round's own: train the dropout head on `labeled` rows (`training.train_head`), score every unlabeled row
with T head samples (`scoring.score_embeddings`, written as a scores dataset), pick k (`select`: top-k by
BALD, or k-center on the embeddings). One JSON line per strategy.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROUND_STRATEGIES = ("bald", "kcenter")
FILE_ROWS = 65_536  # rows per embeddings file, as `dal-dist embed` writes many files
HEAD_EPOCHS = 10


def write_embeddings(out: Path, n: int, dim: int, classes: int, seed: int) -> np.ndarray:
    """`n` float16 rows around `classes` seeded centers, as a published embeddings dataset; returns the labels."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dal_dist.scoring.embed import EMBEDDINGS_KIND
    from dal_dist.scoring.scorer import vector_array
    from dal_dist.scoring.publish import SCORES_FORMAT, SCORES_MARKER

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    out.mkdir(parents=True)
    files = []
    for i, s in enumerate(range(0, n, FILE_ROWS)):
        y = labels[s:s + FILE_ROWS]
        e = (centers[y] + 1.5 * rng.standard_normal((len(y), dim), dtype=np.float32)).astype(np.float16)
        name = f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"id": pa.array(np.arange(s, s + len(y)), pa.int64()),
                                 "embedding": vector_array(e)}),
                       out / name, use_dictionary=False)
        files.append(name)
    (out / SCORES_MARKER).write_text(json.dumps({
        "format": SCORES_FORMAT, "rows": n, "rejects": 0, "files": files, "reject_files": [],
        "kind": EMBEDDINGS_KIND, "model": "synthetic", "embedding_dtype": "float16"}))
    return labels


def run_round(work: Path, strategy: str, labeled: int, k: int, mc_samples: int, seed: int) -> dict[str, Any]:
    """Train, score and select once over `work/emb`, timing each; in this process (its peak RSS included)."""
    from dal_dist.models import default_config
    from dal_dist.scoring import embeddings_info, read_embedding_rows, score_embeddings
    from dal_dist.selection import select
    from dal_dist.training import TrainConfig, train_head

    labels = np.load(work / "labels.npy")
    ids = np.sort(np.random.default_rng(seed).choice(len(labels), size=labeled, replace=False))
    t0 = time.perf_counter()
    info = embeddings_info(work / "emb")
    config = default_config("embedding-head", int(labels.max()) + 1, in_channels=info.dim, image_size=1, seed=seed)
    train_head(config, read_embedding_rows(info, ids), labels[ids],
               TrainConfig(epochs=HEAD_EPOCHS, batch_size=256, lr=1e-3, seed=seed), work / "head.pt")
    t1 = time.perf_counter()
    kcenter = strategy == "kcenter"
    score_embeddings(work / "emb", work / "head.pt", work / f"scores-{strategy}",
                     acquisitions="entropy" if kcenter else "bald", mc_samples=mc_samples, labeled=ids,
                     embed_labeled=kcenter, seed=seed, overwrite=True, write_embedding=kcenter)
    t2 = time.perf_counter()
    picks = (select("kcenter", k, scores=work / f"scores-{strategy}", seed=seed) if kcenter
             else select("topk", k, scores=work / f"scores-{strategy}", by="bald", seed=seed))
    t3 = time.perf_counter()
    if picks.num_rows != k:
        raise RuntimeError(f"picked {picks.num_rows} rows, expected {k}")
    return {"train_s": round(t1 - t0, 3), "score_s": round(t2 - t1, 3), "select_s": round(t3 - t2, 3),
            "round_s": round(t3 - t0, 3), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(n: int = 1_000_000, dim: int = 512, labeled: int = 10_000, k: int = 1000, mc_samples: int = 20,
         strategies: tuple[str, ...] = ("bald",), classes: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Write the embeddings once, then one child process per strategy; print and return its JSON line."""
    results = []
    with tempfile.TemporaryDirectory(prefix="dal-dist-bench-round-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        np.save(work / "labels.npy", write_embeddings(work / "emb", n, dim, classes, seed))
        setup_s = time.perf_counter() - t
        for strategy in strategies:
            cmd = [sys.executable, "-m", "dal_dist.benchmarks.round", "--one", str(work), strategy, str(labeled),
                   str(k), str(mc_samples), str(seed)]
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line: dict[str, Any] = {"bench": "round", "strategy": strategy, "n": n, "dim": dim, "labeled": labeled,
                                    "k": k, "mc_samples": mc_samples, "embedding_dtype": "float16",
                                    "embeddings_bytes": n * dim * 2, "setup_s": round(setup_s, 1)}
            if p.returncode != 0:
                line["error"] = p.stderr.strip()[-800:]
            else:
                line.update(json.loads(p.stdout.strip().splitlines()[-1]))
                line["rss_over_embeddings"] = round(line["peak_rss_bytes"] / line["embeddings_bytes"], 2)
            print(json.dumps(line), flush=True)
            results.append(line)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--one":
        work, strategy, *nums = sys.argv[2:]
        print(json.dumps(run_round(Path(work), strategy, *map(int, nums))))
    else:
        sys.exit("usage: python -m dal_dist.benchmarks.round --one WORKDIR STRATEGY LABELED K MC_SAMPLES SEED")
