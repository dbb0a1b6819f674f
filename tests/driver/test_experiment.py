"""The experiment jobs' run configs are valid for every strategy they run, and their tables say what ran."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dal_dist.driver.config import parse_config
from dal_dist.driver.report import Curve

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _job(name: str):
    spec = importlib.util.spec_from_file_location(name, JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["large_batch", "reproduce_gal2017"])
def test_every_strategy_of_a_job_has_a_valid_run_config(name, tmp_path):
    job = _job(name)
    for strategy in job.STRATEGIES:
        if name == "large_batch":
            cfg = job.run_config(strategy, 1, tmp_path / "pool", tmp_path / "test", budget=1000, initial=100,
                                 max_labels=3100, epochs=10, subset=10_000, batch_size=128, gpu=False)
        else:
            cfg = job.run_config(strategy, 1, tmp_path / "pool", tmp_path / "test", max_labels=1000, epochs=50,
                                 workers=1)
        parsed = parse_config(cfg)
        assert parsed.strategy.name == strategy and parsed.seed == 1
        if name == "large_batch":  # the stated protocol: subsets everywhere but cluster_margin, T = 2 where unused
            assert (parsed.strategy.subset is None) == (strategy in ("random", "cluster_margin"))
            assert parsed.strategy.mc_samples == {"kcenter": 2, "typiclust": 2, "badge": 2,
                                                  "cluster_margin": 5}.get(strategy, 20)


def test_accuracy_table_has_mean_and_sd_per_batch_and_leaves_missing_points_empty():
    job = _job("large_batch")
    curves = [Curve("a-seed0", "a", 0, [100, 1100], [0.5, 0.9]), Curve("a-seed1", "a", 1, [100, 1100], [0.7, 0.92]),
              Curve("b-seed0", "b", 0, [100], [0.6])]
    table = job.accuracy_table(curves, [100, 1100])
    assert "| a | 2 | 0.6000 ± 0.1000 | 0.9100 ± 0.0100 |" in table
    assert "| b | 1 | 0.6000 |  |" in table
