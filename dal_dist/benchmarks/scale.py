"""Scale run: synth a pool of N deformed digits (or reuse one), score it with T MC samples, report
wall time, images/s and the driver's peak RSS (the driver must not grow with the pool)."""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def run(n: int = 1_000_000, pool: str | None = None, workers: int = 2, mc_samples: int = 20,
        model: str = "mnist-cnn", seed: int = 0, out: str | None = None) -> dict[str, Any]:
    """Score an N-image pool end to end on the current (or a local) Ray cluster."""
    import ray

    from dal_dist.models import CHECKPOINT_FILE, build_model, default_config, save_checkpoint
    from dal_dist.pool import synth_pool, validate_pool
    from dal_dist.scoring import score_pool

    tmp = Path(tempfile.mkdtemp(prefix="dal-dist-scale-"))
    result: dict[str, Any] = {"bench": "scale", "n": n, "workers": workers, "mc_samples": mc_samples,
                              "model": model}
    if pool is None:
        t = time.time()
        pool = str(tmp / "pool")
        synth_pool(n, pool, seed=seed)
        result["synth_s"] = time.time() - t
    info = validate_pool(pool)
    result["n"] = info.rows
    ckpt = tmp / CHECKPOINT_FILE
    save_checkpoint(build_model(default_config(model, 10, seed=seed)), ckpt)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    s = score_pool(pool, ckpt, out or tmp / "scores", acquisitions="bald,entropy,margin,least_confidence,"
                   "variation_ratio,mean_std", mc_samples=mc_samples, workers=workers, seed=seed,
                   progress=False, overwrite=True)
    result.update(score_wall_s=s.seconds, images_per_s=s.images_per_s, steady_images_per_s=s.steady_images_per_s,
                  startup_s=s.startup_s, rows=s.rows, rejects=s.rejects,
                  driver_peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--pool", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    print(json.dumps(run(n=a.n, pool=a.pool, workers=a.workers, mc_samples=a.mc_samples, out=a.out)), flush=True)
