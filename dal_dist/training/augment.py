"""Training-time augmentation on uint8 images: seeded random shift and horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(batch: torch.Tensor, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to 1/8 of the side (zero pad + crop) and optional horizontal flip, on uint8 N×H×W×C."""
    n, h, w, _ = batch.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(batch.permute(0, 3, 1, 2), (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty_like(batch)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(1) if flips[i] else crop
    return out
