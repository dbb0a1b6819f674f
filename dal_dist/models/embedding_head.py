"""A classifier on cached embeddings ("embed once, score many"): the frozen backbone ran once, offline.

Its input is a row of embeddings (`scoring.embed.embed_pool` output), not an image: in the config an
embedding of width D is a D×1×1 input (`in_channels` = D, `image_size` = 1), so every size check made
for images holds. The deterministic part of the head, an optional hidden layer (`extra.hidden`), is this
model's `features`, so it runs once per row; only the last layer sits behind the dropout and is sampled
T times (`mc_head_probs`): exact MC dropout for the same reason as with an image backbone, nothing
before the dropout samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models.base import DALModel, ModelConfig

EMBEDDING_HEAD = "embedding-head"


class EmbeddingHead(DALModel):
    """[Linear → ReLU] (deterministic, once) → Dropout → Linear (T samples) on D-wide embedding rows."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        dim, hidden = config.in_channels, config.extra.get("hidden", 0)
        if config.image_size != 1 or not isinstance(hidden, int) or hidden < 0:
            raise DalDistError(f"model {EMBEDDING_HEAD}: takes D-wide embedding rows as in_channels=D, image_size=1, "
                               f"and extra.hidden >= 0; got image_size={config.image_size} hidden={hidden!r}")
        self.config = config
        self.hidden = nn.Linear(dim, hidden) if hidden else None
        width = hidden or dim
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(width, config.num_classes)
        self.level_channels = ()
        self.embed_dim = width

    def feature_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = x.flatten(1).float()  # [B, D] or [B, D, 1, 1]
        return (F.relu(self.hidden(x)) if self.hidden is not None else x), []

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(f))

    def sample_probs(self, f: torch.Tensor, samples: int) -> torch.Tensor:
        """T×B×C softmax of T dropout samples of the last layer, as one B×D by D×(T·C) matmul.

        Sample t drops the same inputs of every row of this call (its mask is folded into the weights:
        fc(m ⊙ f / (1-p)) = f @ (W ⊙ m / (1-p))ᵀ + b), so each row's T samples are still T independent
        draws of its dropout distribution, exactly as with per-row masks; only rows of one call share
        them, as BatchBALD's consistent masks do. Per-row masks would cost a T·B×D random tensor: at a
        million rows that is ~50× slower than this. Masks come from torch's global RNG (seeded by the caller).
        """
        p = float(self.drop.p)
        w, b = self.fc.weight, self.fc.bias  # C×W, C
        keep = (torch.rand(samples, 1, w.shape[1], device=f.device) >= p).to(w.dtype) / (1.0 - p) if p > 0 \
            else torch.ones(samples, 1, w.shape[1], device=f.device, dtype=w.dtype)
        wt = (w.unsqueeze(0) * keep).reshape(samples * w.shape[0], w.shape[1])  # (T·C)×W
        logits = torch.addmm(b.repeat(samples), f.to(w.dtype), wt.t())  # B×(T·C)
        return torch.softmax(logits.float().view(f.shape[0], samples, -1).transpose(0, 1), dim=-1)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def head_keys(self) -> set[str]:
        return {"fc.weight", "fc.bias"}
