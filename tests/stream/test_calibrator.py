"""The budget calibrator's guarantees: never over budget, spending held to the schedule, restartable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dal_dist.stream import BudgetCalibrator


def _sequences(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "increasing": np.arange(n, dtype=float), "decreasing": -np.arange(n, dtype=float),
        "constant": np.ones(n), "random": rng.random(n), "heavy_tail": rng.pareto(1.0, n),
        "sawtooth": np.tile(np.arange(37, dtype=float), n // 37 + 1)[:n],
        "with_nan": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
    }


@pytest.mark.parametrize("budget,expected", [(50, 1000), (1, 300), (0, 100), (120, 100), (300, 1000)])
@pytest.mark.parametrize("name", list(_sequences(8)))
def test_calibrator_never_exceeds_budget_and_keeps_the_schedule(name, budget, expected):
    scores = _sequences(2 * expected)[name]  # the stream runs past N: the cap must still hold
    c = BudgetCalibrator(budget, expected)
    lab, thr, reasons = c.decide_many(scores)
    cum = np.cumsum(lab)
    assert cum[-1] <= budget
    assert cum[expected - 1] == min(budget, expected)  # exactly N items → the whole budget
    t = np.arange(1, expected + 1)
    before_spent = cum[:expected] < budget
    sched = budget * t / expected
    assert (cum[:expected][before_spent] <= np.ceil(sched[before_spent]) + c.slack).all()
    assert (cum[:expected] >= np.minimum(np.floor(sched) - c.slack - 1, np.minimum(t, budget))).all()
    assert np.isnan(thr[[r == "warmup" for r in reasons]]).all()


def test_calibrator_rate_tracks_budget_on_iid_scores_and_picks_high_ones():
    n, b = 5000, 250
    scores = np.random.default_rng(1).random(n)
    lab, _, reasons = BudgetCalibrator(b, n).decide_many(scores)
    assert lab.sum() == b
    quarters = [int(q.sum()) for q in np.array_split(lab, 4)]
    assert all(abs(q - b / 4) <= 0.2 * b / 4 for q in quarters), quarters
    # The window quantile does the choosing: most labels are in the top B/N of all scores.
    assert (scores[lab] >= np.quantile(scores, 1 - b / n)).mean() >= 0.7
    assert reasons.count("quantile") > 0.9 * n


@pytest.mark.parametrize("direction", [1, -1])
def test_calibrator_spends_evenly_on_a_drifting_stream(direction):
    n, b = 4000, 200
    rng = np.random.default_rng(2)
    scores = direction * np.linspace(0, 6, n) + rng.normal(size=n)
    lab, _, _ = BudgetCalibrator(b, n).decide_many(scores)
    quarters = [int(q.sum()) for q in np.array_split(lab, 4)]
    assert lab.sum() == b and all(abs(q - b / 4) <= 0.25 * b / 4 for q in quarters), quarters
    # A fixed threshold calibrated on the first 10% would not: drift moves its spending to one end.
    fixed = scores >= np.quantile(scores[: n // 10], 1 - b / n)
    assert max(abs(int(q.sum()) - b / 4) for q in np.array_split(fixed, 4)) > 0.5 * b / 4
    # Labels are locally high: above the median of the surrounding window of scores.
    idx = np.flatnonzero(lab)
    local_median = np.array([np.median(scores[max(0, i - 200): i + 200]) for i in idx])
    assert (scores[idx] > local_median).mean() >= 0.85


def test_calibrator_state_round_trip_decides_identically():
    scores = np.random.default_rng(3).random(3000)
    full, thr_full, _ = BudgetCalibrator(100, 3000).decide_many(scores)
    c = BudgetCalibrator(100, 3000)
    a, thr_a, _ = c.decide_many(scores[:1234])
    c2 = BudgetCalibrator.from_state(json.loads(json.dumps(c.state())))
    b, thr_b, _ = c2.decide_many(scores[1234:])
    assert (np.r_[a, b] == full).all()
    np.testing.assert_array_equal(np.r_[thr_a, thr_b], thr_full)


def test_calibrator_rate_target_and_bad_arguments():
    c = BudgetCalibrator(50, rate=0.1)
    assert c.expected == 500
    for kwargs in ({"budget": 5}, {"budget": 5, "expected": 10, "rate": 0.1}, {"budget": -1, "expected": 10},
                   {"budget": 5, "rate": 1.5}):
        with pytest.raises(ValueError):
            BudgetCalibrator(**kwargs)
