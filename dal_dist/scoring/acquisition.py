"""MC-dropout acquisition functions: pure torch, `probs` is T×B×C (T stochastic passes), output is B.

Every score follows one convention: **higher = more worth labeling**, so top-k always takes the
largest values. References: Gal, Islam & Ghahramani 2017 (ICML), "Deep Bayesian Active Learning with
Image Data" (BALD, max entropy, variation ratios, mean STD); Houlsby et al. 2011 (BALD);
Kampffmeyer et al. 2016 (mean STD); Settles 2009 (least confidence, margin).
"""

from __future__ import annotations

from typing import Callable

import torch

_EPS = 1e-12


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive (max) entropy H[y | x, D] of the MC-averaged distribution; max log C at uniform."""
    return _entropy(probs.mean(dim=0))


def bald(probs: torch.Tensor) -> torch.Tensor:
    """Mutual information I[y; w | x, D] = H[E_w p] − E_w H[p]: disagreement between dropout samples."""
    mi = _entropy(probs.mean(dim=0)) - _entropy(probs).mean(dim=0)
    return mi.clamp_min(0.0)  # ≥ 0 mathematically (Jensen); clamp float round-off only


def margin(probs: torch.Tensor) -> torch.Tensor:
    """1 − (p₁ − p₂) of the mean distribution: small top-2 margins score high."""
    top2 = probs.mean(dim=0).topk(2, dim=-1).values
    return 1.0 - (top2[..., 0] - top2[..., 1])


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """1 − max_y p(y|x): the model's doubt about its own prediction."""
    return 1.0 - probs.mean(dim=0).max(dim=-1).values


def variation_ratio(probs: torch.Tensor) -> torch.Tensor:
    """1 − (count of the modal class among the T sampled argmaxes) / T (Freeman 1965; Gal 2017)."""
    t, b, c = probs.shape
    votes = torch.zeros(b, c, dtype=torch.float32, device=probs.device)
    votes.scatter_add_(1, probs.argmax(dim=-1).T, torch.ones(b, t, device=probs.device))
    return 1.0 - votes.max(dim=-1).values / t


def mean_std(probs: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the std of p(y=c) across dropout samples (Kampffmeyer et al. 2016)."""
    mean = probs.mean(dim=0)
    var = (probs.square().mean(dim=0) - mean.square()).clamp_min(0.0)
    return var.sqrt().mean(dim=-1)


ACQUISITIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bald": bald,
    "entropy": entropy,
    "margin": margin,
    "least_confidence": least_confidence,
    "variation_ratio": variation_ratio,
    "mean_std": mean_std,
}


def parse_acquisitions(spec: str | list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """Turn 'bald,entropy' into a validated, de-duplicated list (order kept); `extra` admits model outputs."""
    from dal_dist.errors import DalDistError

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in ACQUISITIONS and n not in extra]
    if unknown or not names:
        raise DalDistError(f"--acquisition: unknown {unknown or 'empty list'}; expected a comma list of "
                           f"{', '.join([*ACQUISITIONS, *extra])}")
    return list(dict.fromkeys(names))


def score_all(probs: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """All requested scores from one T×B×C tensor (the mean is cheap; recomputing it keeps each pure)."""
    return {n: ACQUISITIONS[n](probs) for n in names if n in ACQUISITIONS}
