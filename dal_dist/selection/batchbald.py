"""BatchBALD: greedy batch acquisition by the joint mutual information of the batch with the weights.

Reference: Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch Acquisition for Deep
Bayesian Active Learning", NeurIPS 2019 (and their batchbald_redux code, which this follows).

Pick n+1 maximizes a(x) = H(y_1..y_n, y_x) − E_ω[H(y_x | ω)] (the terms of y_1..y_n are the same for
every x); the reported `score` is the batch's mutual information after the pick,
H(y_1..y_n+1) − Σ_i E_ω H(y_i | ω). The joint entropy uses T posterior samples ω_t, the SAME for every
image (the same dropout masks: `fixed_mask_probs`), so p(y_1..y_n) = (1/T) Σ_t Π_i p(y_i | x_i, ω_t):

* exact while C^(n+1) ≤ `joint_samples` (every configuration of y_1..y_n enumerated);
* then sampled: `joint_samples` configurations ŷ_m of the batch drawn (seeded) from p(y_1..y_n), each
  new pick's class drawn given them, and H(y_1..y_n, y_x) ≈ −(1/M) Σ_m Σ_c p(ŷ_m, c)/p(ŷ_m) · log p(ŷ_m, c).

With no pick yet a(x) is BALD, so the first pick is the BALD argmax (ties: the earlier candidate).
Cost O(k·N·M·T·C) for N candidates: that is why it runs on the top-N BALD candidates only (default 10·k).
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from dal_dist.errors import DalDistError
from dal_dist.selection.io import scan_scores
from dal_dist.selection.topk import check_k, merge_topk

DEFAULT_JOINT_SAMPLES = 10_000
MAX_MC_SAMPLES = 10_000
PROBS_BYTES_BUDGET = 4 << 30  # the candidates' (M, T, C) probabilities, float64 in the joint-entropy blocks
BLOCK_ELEMENTS = 1 << 22  # floats of one (configurations × candidates × classes) block


def _xlogx(p: np.ndarray) -> np.ndarray:
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def conditional_entropies(probs: np.ndarray) -> np.ndarray:
    """E_ω H(y | x, ω) per candidate, from (N, T, C) probabilities."""
    return -_xlogx(probs.astype(np.float64)).sum(axis=2).mean(axis=1)


class JointEntropy:
    """p_t(configuration) of the batch so far, exact (all C^n rows) or as sampled configurations."""

    def __init__(self, t: int, c: int, joint_samples: int, rng: np.random.Generator) -> None:
        self.rows = np.ones((1, t))  # (configurations, T): one empty configuration of probability 1
        self.c, self.max_rows, self.rng = c, joint_samples, rng
        self.exact = True

    def add(self, p_tc: np.ndarray) -> None:
        """Add a picked variable with T×C probabilities (switching to sampled once C^(n+1) > joint_samples)."""
        p_tc = p_tc.astype(np.float64)
        if self.exact and len(self.rows) * self.c > self.max_rows:
            prob = self.rows.mean(axis=1)
            draw = self.rng.choice(len(self.rows), size=self.max_rows, p=prob / prob.sum())
            self.rows, self.exact = self.rows[draw], False
        if self.exact:  # every (configuration, class) pair: C^(n+1) rows
            self.rows = (self.rows[:, None, :] * p_tc.T[None, :, :]).reshape(-1, self.rows.shape[1])
            return
        joint = self.rows @ p_tc  # (M, C): p(ŷ_m, c) up to 1/T
        cum = np.cumsum(joint / joint.sum(axis=1, keepdims=True), axis=1)
        cls = np.minimum((cum < self.rng.random((len(cum), 1))).sum(axis=1), self.c - 1)
        self.rows = self.rows * p_tc[:, cls].T

    def entropies_with(self, probs: np.ndarray) -> np.ndarray:
        """H(batch, y_x) for every candidate x of (N, T, C) probabilities, in blocks."""
        n, t, c = probs.shape
        out = np.empty(n)
        q = self.rows.mean(axis=1)  # p(configuration)
        block = max(1, BLOCK_ELEMENTS // max(1, len(self.rows) * c))
        for s in range(0, n, block):
            p = probs[s:s + block].astype(np.float64)  # (B, T, C)
            b = len(p)
            joint = self.rows @ p.transpose(1, 0, 2).reshape(t, b * c)  # one GEMM: T·p(config, (x, c))
            joint *= 1.0 / t
            plogp = joint * np.log(np.maximum(joint, np.finfo(np.float64).tiny))  # 0·log 0 = 0
            plogp = plogp.reshape(len(q), b, c).sum(axis=2)  # (configurations, B)
            if self.exact:
                out[s:s + b] = -plogp.sum(axis=0)
            else:
                out[s:s + b] = -(plogp / q[:, None]).sum(axis=0) / len(q)
        return out


def batchbald(probs: np.ndarray, k: int, *, joint_samples: int = DEFAULT_JOINT_SAMPLES, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(rows in pick order, batch mutual information after each pick): greedy BatchBALD over (N, T, C) probs."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1] < 1 or probs.shape[2] < 2:
        raise DalDistError(f"probs: shape {probs.shape}, expected (candidates, MC samples, classes >= 2)")
    check_k(k, len(probs))
    if not isinstance(joint_samples, (int, np.integer)) or joint_samples < 1:
        raise DalDistError(f"joint_samples = {joint_samples}: expected a positive integer")
    ok = np.isfinite(probs).all(axis=(1, 2))
    if not ok.all():
        raise DalDistError(f"probs: candidate {int(np.argmin(ok))} has NaN or inf values")
    cond = conditional_entropies(probs)
    joint = JointEntropy(probs.shape[1], probs.shape[2], joint_samples, np.random.default_rng(seed))
    picked = np.zeros(len(probs), bool)
    picks, mi = np.empty(k, np.int64), np.empty(k)
    shared = 0.0
    for i in range(k):
        score = joint.entropies_with(probs) - cond
        score[picked] = -np.inf
        j = int(np.argmax(score))
        picks[i], mi[i] = j, score[j] - shared
        shared += cond[j]
        picked[j] = True
        if i + 1 < k:
            joint.add(probs[j])
    return picks, mi


def fixed_mask_probs(model, images: np.ndarray, mc_samples: int, seed: int, *, device=None,
                     batch_size: int = 256) -> np.ndarray:
    """(N, T, C) softmax probabilities with the SAME dropout masks for every image in sample t.

    Each `nn.Dropout` of the head draws one mask per sample t (shape of one row of its input, seeded by
    (seed, t, layer)) and applies it to every image, so an image's probabilities do not depend on which
    other images share its batch.
    """
    import torch

    from dal_dist.models import preprocess

    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    state = {"t": 0}

    def hook(layer: int):
        def apply(module, inputs, output):
            x = inputs[0]
            if module.p == 0:
                return x
            g = torch.Generator(device="cpu").manual_seed(zlib.crc32(f"{seed}/{state['t']}/{layer}".encode()))
            keep = (torch.rand(x.shape[1:], generator=g) >= module.p).to(x.device, x.dtype)
            return x * keep / (1.0 - module.p)
        return apply

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(dropouts)]
    out = np.empty((len(images), mc_samples, model.config.num_classes), np.float32)
    try:
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = preprocess(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).to(device),
                               model.config)
                f = model.features(x)
                for t in range(mc_samples):
                    state["t"] = t
                    out[s:s + len(x), t] = torch.softmax(model.head(f).float(), dim=-1).cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return out


def check_mc_samples(mc_samples: object) -> None:
    """T shared dropout masks: an integer in 2..MAX_MC_SAMPLES (one sample has no epistemic spread)."""
    if not isinstance(mc_samples, (int, np.integer)) or isinstance(mc_samples, bool) \
            or not 2 <= mc_samples <= MAX_MC_SAMPLES:
        raise DalDistError(f"mc_samples (--mc-samples) = {mc_samples}: expected an integer in 2..{MAX_MC_SAMPLES}")


def select_batchbald(scores: str | os.PathLike, k: int, *, pool: str | os.PathLike | None,
                     checkpoint: str | os.PathLike | None, candidates: int | None = None, mc_samples: int = 20,
                     by: str = "bald", joint_samples: int = DEFAULT_JOINT_SAMPLES,
                     labeled_ids: np.ndarray | None = None, seed: int = 0, device: str | None = "auto"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(ids in pick order, batch MI): BatchBALD on the top-`candidates` unlabeled rows by `by` (default 10·k).

    The candidates' images are read from `pool` and run through `checkpoint` with shared dropout masks.
    """
    if pool is None or checkpoint is None:
        raise DalDistError("strategy batchbald needs --pool DIR and --checkpoint FILE (it re-runs the model on "
                           "its candidates with the same dropout masks for every image)")
    check_mc_samples(mc_samples)
    from dal_dist.device import torch_device
    from dal_dist.models import load_checkpoint
    from dal_dist.pool import read_images, validate_pool

    info = validate_pool(pool)
    model = load_checkpoint(checkpoint)
    dev = torch_device(device)
    scan = scan_scores(scores, labeled_ids=labeled_ids, score=by, need_embeddings=False)
    check_k(k, scan.num_candidates)
    m = min(10 * k, scan.num_candidates) if candidates is None else candidates
    check_k(m, scan.num_candidates, "candidates in the scores dataset (--candidates)")
    if k > m:
        raise DalDistError(f"k = {k} is larger than --candidates = {m}")
    need = m * mc_samples * model.config.num_classes * 8
    if need > PROBS_BYTES_BUDGET:
        raise DalDistError(f"--candidates {m} x --mc-samples {mc_samples} x {model.config.num_classes} classes: "
                           f"{need / 2**30:.1f} GiB of probabilities, over {PROBS_BYTES_BUDGET / 2**30:.0f} GiB; "
                           "lower --candidates or --mc-samples")
    top, _ = merge_topk(((i[~lab], s[~lab]) for i, lab, s in zip(scan.ids, scan.labeled, scan.scores)), m)
    c = model.config
    images = read_images(pool, top, info.image_shape or (c.image_size, c.image_size, c.in_channels))
    probs = fixed_mask_probs(model.to(dev), images, mc_samples, seed, device=dev)
    picks, mi = batchbald(probs, k, joint_samples=joint_samples, seed=seed)
    return top[picks], mi
