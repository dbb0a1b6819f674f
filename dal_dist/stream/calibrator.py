"""The budget calibrator of stream-based selective sampling: pure, no I/O.

An online label/skip rule for items that arrive one at a time (Settles 2009, "Active Learning
Literature Survey", §2.2): the labels never exceed the budget B and the realised labeling rate tracks
B/N over a stream of expected length N. `StreamSelector` (dal_dist.stream.selector) feeds it scores.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Decision:
    """One item's fate: the threshold it was compared against (NaN during warm-up) and why."""

    label: bool
    threshold: float
    reason: str  # "quantile" | "warmup" | "behind" | "ahead" | "catch_up" | "spent"


class BudgetCalibrator:
    """Online label/skip rule: a hard budget cap, spending held to a band around the even schedule.

    Item t (0-based) with `labeled` labels so far, schedule s(t) = B·(t+1)/N, slack δ, and the scores
    of the previous W items (the window):
      1. spent:    labeled == B                          → skip (hard cap: never more than B labels).
      2. catch-up: N - t <= B - labeled                   → label (every remaining expected item is needed;
                   also once the stream runs past N with budget left).
      3. behind:   labeled < floor(s(t)) - δ             → label (whatever its score).
      4. warm-up:  t < warmup                            → skip (too few scores to calibrate on).
      5. ahead:    labeled >= ceil(s(t)) + δ             → skip (whatever its score).
      6. quantile: r = (B - labeled)/(N - t) + (B·t/N - labeled)/(W/2), the rate still needed plus the
                   deficit against the schedule made up over about half a window; threshold = the (1 - r)
                   order statistic of the window; label iff score >= threshold.
    Guarantees, for any score sequence: labels <= B (rule 1); after every prefix of t items the labels
    stay within [min(floor(B·t/N) - δ - 1, t), ceil(B·t/N) + δ] until the budget is spent (rules 3, 5), so
    the budget is spread evenly even on adversarial orders (a decreasing stream still gets labels early,
    an increasing one cannot drain the budget); a stream of exactly N items gets exactly B labels
    (rule 2). Within the band the window quantile picks the high scorers: on iid scores it estimates
    the score distribution, and the finite window (not all history) follows drift.
    A rate target ρ instead of N is the same rule with N = ceil(B/ρ).
    """

    def __init__(self, budget: int, expected: int | None = None, *, rate: float | None = None,
                 window: int | None = None, warmup: int | None = None, slack: int | None = None):
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        if (expected is None) == (rate is None):
            raise ValueError("give exactly one of expected (stream length N) or rate (labels per item)")
        if rate is not None:
            if not 0 < rate <= 1:
                raise ValueError(f"rate must be in (0, 1], got {rate}")
            expected = max(budget, math.ceil(budget / rate))
        assert expected is not None
        if expected < 1:
            raise ValueError(f"expected stream length must be >= 1, got {expected}")
        for name, value, least in (("window", window, 1), ("warmup", warmup, 0), ("slack", slack, 0)):
            if value is not None and value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        self.budget, self.expected = int(budget), int(expected)
        r0 = self.budget / self.expected if self.expected else 1.0
        # ~20 window items per label keeps the (1 - r) order statistic off the window's maximum.
        self.window = int(window) if window else int(min(10_000, max(200, math.ceil(20 / max(r0, 1e-9)))))
        self.warmup = int(warmup) if warmup is not None else min(50, self.window, self.expected // 10)
        self.slack = int(slack) if slack is not None else max(1, math.ceil(0.05 * self.budget))
        self.seen = 0
        self.labeled = 0
        self._recent: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []  # the window, kept sorted (insort/remove are memmoves: O(W))

    # -- the rule
    def threshold(self) -> float:
        """The current quantile threshold (NaN while the window is empty)."""
        if not self._sorted:
            return math.nan
        need = self.remaining_budget / max(self.expected - self.seen, 1)
        need += (self.budget * self.seen / self.expected - self.labeled) / (self.window / 2)
        if need >= 1:
            return self._sorted[0]
        need = max(need, 0.0)
        k = min(len(self._sorted) - 1, int(math.floor((1.0 - need) * len(self._sorted))))
        return self._sorted[k]

    def decide(self, score: float) -> Decision:
        """Decide one arriving item, then add its score to the window."""
        score = float(score)
        if math.isnan(score):
            score = -math.inf  # an unscorable item is never worth a label
        t = self.seen
        thr = self.threshold()
        if self.labeled >= self.budget:
            d = Decision(False, thr, "spent")
        elif self.expected - t <= self.remaining_budget:
            d = Decision(True, thr, "catch_up")
        elif self.labeled < math.floor(self.budget * (t + 1) / self.expected) - self.slack:
            d = Decision(True, thr, "behind")
        elif t < self.warmup:
            d = Decision(False, math.nan, "warmup")
        elif self.labeled >= math.ceil(self.budget * (t + 1) / self.expected) + self.slack:
            d = Decision(False, thr, "ahead")
        else:
            d = Decision(bool(score >= thr), thr, "quantile")
        self.seen += 1
        self.labeled += int(d.label)
        self._push(score)
        return d

    def decide_many(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Decide a batch in arrival order: (label bool[n], threshold float64[n], reasons)."""
        out = [self.decide(s) for s in np.asarray(scores, dtype=np.float64)]
        return (np.array([d.label for d in out], dtype=bool), np.array([d.threshold for d in out], np.float64),
                [d.reason for d in out])

    @property
    def remaining_budget(self) -> int:
        return self.budget - self.labeled

    def _push(self, score: float) -> None:
        self._recent.append(score)
        bisect.insort(self._sorted, score)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    # -- persistence (a restarted stream continues with the same window and counts)
    def state(self) -> dict[str, Any]:
        """JSON-able state; `from_state(state())` decides exactly as this one would."""
        return {"budget": self.budget, "expected": self.expected, "window": self.window, "warmup": self.warmup,
                "slack": self.slack, "seen": self.seen, "labeled": self.labeled,
                "recent": [s if math.isfinite(s) else None for s in self._recent]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BudgetCalibrator:
        """Rebuild a calibrator saved by `state()`."""
        c = cls(state["budget"], state["expected"], window=state["window"], warmup=state["warmup"],
                slack=state["slack"])
        c.seen, c.labeled = int(state["seen"]), int(state["labeled"])
        for s in state["recent"]:
            c._push(-math.inf if s is None else float(s))
        return c
