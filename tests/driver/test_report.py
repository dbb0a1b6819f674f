"""Report math and files: labels-to-accuracy, the summary table, curves CSV round trip, the plot."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dal_dist.driver.report import (Curve, plot_curves, read_curves_csv, strategy_bands, summary_table,
                                    write_curves_csv)


def _curves():
    return [Curve("a", "bald", 0, [20, 30, 40, 50], [0.5, 0.86, 0.91, 0.96]),
            Curve("b", "bald", 1, [20, 30, 40, 50], [0.5, 0.91, 0.93, 0.94]),
            Curve("c", "random", 0, [20, 30, 40, 50], [0.5, 0.6, 0.7, 0.8])]


def test_labels_to_reach_is_the_first_crossing():
    a, b, c = _curves()
    assert a.labels_to_reach(0.9) == 40 and b.labels_to_reach(0.9) == 30
    assert a.labels_to_reach(0.95) == 50 and b.labels_to_reach(0.95) is None
    assert c.labels_to_reach(0.9) is None


def test_summary_table_means_over_seeds_and_flags_unreached():
    md = summary_table(_curves(), (0.9, 0.95))
    lines = md.strip().splitlines()
    bald = next(line for line in lines if line.startswith("| bald"))
    assert "| 2 |" in bald and "35 ± 5" in bald and "50 (1/2 runs reached it)" in bald
    rnd = next(line for line in lines if line.startswith("| random"))
    assert "> 50 (not reached)" in rnd and "0.8000 (50)" in rnd


def test_curves_csv_round_trip(tmp_path):
    write_curves_csv(_curves(), tmp_path / "curves.csv")
    assert (tmp_path / "curves.csv").read_text().splitlines()[0] == "strategy,seed,labels,test_accuracy"
    back = read_curves_csv(tmp_path / "curves.csv")
    assert [(c.strategy, c.seed, c.labels, c.accuracy) for c in back] == \
        [(c.strategy, c.seed, c.labels, c.accuracy) for c in _curves()]


def test_plot_writes_a_png(tmp_path):
    plot_curves(_curves(), tmp_path / "p.png")
    img = Image.open(tmp_path / "p.png")
    assert img.format == "PNG" and img.size[0] > 400


def test_strategy_bands_are_mean_and_sd_over_seeds_and_a_stopped_run_drops_out():
    stopped = Curve("d", "random", 1, [20, 30], [0.5, 0.7])
    bands = strategy_bands(_curves() + [stopped])
    grid, mean, sd, n = bands["bald"]
    assert n == 2 and grid.tolist() == [20, 30, 40, 50]
    assert np.allclose(mean, [0.5, 0.885, 0.92, 0.95]) and np.allclose(sd, [0, 0.025, 0.01, 0.01])
    grid, mean, sd, n = bands["random"]
    assert n == 2 and np.allclose(mean, [0.5, 0.65, 0.7, 0.8]) and np.allclose(sd, [0, 0.05, 0, 0])
