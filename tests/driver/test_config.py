"""Run config: unknown keys and wrong types are errors naming the key path; the hash ignores the run dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from dal_dist.driver.config import load_config, parse_config
from dal_dist.errors import DalDistError

BASE = {"pool": "builtin:mnist5k", "strategy": {"name": "bald"}, "budget": 10, "rounds": 3}


def _err(data) -> str:
    with pytest.raises(DalDistError) as e:
        parse_config(data)
    return str(e.value)


def test_defaults_and_rounds():
    cfg = parse_config(BASE)
    assert cfg.num_rounds() == 3 and cfg.round_budget(3) == 10
    assert cfg.initial.kind == "balanced" and cfg.oracle == "simulated" and cfg.train.epochs >= 1
    total = parse_config({**BASE, "rounds": None, "total_budget": 45})  # 20 initial + 10 + 10 + 5
    assert total.num_rounds() == 3 and [total.round_budget(r) for r in (1, 2, 3)] == [10, 10, 5]


@pytest.mark.parametrize("data, key", [
    ({**BASE, "bugdet": 10}, "bugdet: unknown key"),
    ({**BASE, "strategy": {"name": "bald", "bye": "x"}}, "strategy.bye: unknown key"),
    ({**BASE, "train": {"epochs": "many"}}, "train.epochs:"),
    ({**BASE, "train": {"epoch": 3}}, "train.epoch: unknown key"),
    ({**BASE, "budget": "ten"}, "budget:"),
    ({**BASE, "strategy": {"name": "bold"}}, "strategy.name:"),
    ({**BASE, "strategy": {"name": "bald", "by": "entropy"}}, "strategy:"),
    ({**BASE, "initial": {"kind": "balanced", "size": -1}}, "initial.size:"),
    ({**BASE, "model": {"name": "mnist-cnn", "dropout": 2}}, "model.dropout:"),
    ({**BASE, "total_budget": 50}, "exactly one of `rounds` and `total_budget`"),
    ({**BASE, "oracle": "human"}, "balanced peeks"),
])
def test_bad_config_names_the_key(data, key):
    assert key in _err(data)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("pool: [unclosed\n")
    with pytest.raises(DalDistError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("pool: p\nstrategy: {name: bald}\nbudget: 1\nrounds: 1\nseeed: 3\n")
    with pytest.raises(DalDistError, match=r"run\.yaml: seeed: unknown key"):
        load_config(bad)


def test_relative_paths_resolve_against_the_config_and_hash_ignores_run_dir(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("pool: pools/a\nstrategy: {name: entropy}\nbudget: 5\nrounds: 2\nrun_dir: runs/x\n")
    cfg = load_config(f)
    assert cfg.pool == str(tmp_path / "pools" / "a") and cfg.run_dir == str(tmp_path / "runs" / "x")
    other = cfg.model_copy(update={"run_dir": "/elsewhere"})
    assert other.config_hash() == cfg.config_hash()
    assert cfg.model_copy(update={"seed": 1}).config_hash() != cfg.config_hash()


def test_learning_loss_strategy_turns_on_the_loss_module_training():
    cfg = parse_config({**BASE, "strategy": {"name": "learning_loss", "ll_subset": 100}})
    assert cfg.train.learning_loss
    assert "train.learning_loss is only meaningful" in _err({**BASE, "train": {"learning_loss": True}})


def _tiny_pool(path, n=60, side=28, classes=3, seed=0):
    import numpy as np

    from dal_dist.pool import write_pool

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side, 1), dtype=np.uint8)
    write_pool(path, images, np.arange(n) % classes)
    return str(path)


def test_run_refuses_budgets_and_test_pools_that_cannot_work(tmp_path):
    """Found when the run starts, before config.json claims the directory and before any training."""
    from dal_dist.driver import run

    pool = _tiny_pool(tmp_path / "pool")
    cases = [
        ({"budget": 10, "rounds": 5}, r"asks for 70 labels .* more than the pool's 60 images"),
        ({"budget": 5, "rounds": 1, "initial": {"kind": "random", "size": 61}}, r"initial.size = 61 exceeds"),
        ({"budget": 5, "rounds": 1, "test_pool": _tiny_pool(tmp_path / "small", side=16)},
         r"test_pool .*\(16, 16, 1\).*the pool's are \(28, 28, 1\)"),
        ({"budget": 5, "rounds": 1, "test_pool": _tiny_pool(tmp_path / "more", classes=5),
          "model": {"num_classes": 3}}, r"labels \[3, 4\] are outside the model's 3 classes"),
    ]
    for n, (extra, match) in enumerate(cases):
        run_dir = tmp_path / f"run{n}"
        with pytest.raises(DalDistError, match=match):
            run(parse_config({"pool": pool, "strategy": {"name": "bald"}, "executor": "local", **extra}), run_dir)
        assert not (run_dir / "config.json").exists()


def test_config_files_that_are_not_utf8_yaml_or_repeat_a_key(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("pool: caf\u00e9\n".encode("latin-1"))
    dup = tmp_path / "dup.yaml"
    dup.write_text("pool: a\nstrategy: {name: bald}\nbudget: 1\nbudget: 2\nrounds: 1\n")
    for path, match in [(latin, "not UTF-8 text"), (dup, "duplicate key 'budget'"), (tmp_path, "is a directory")]:
        with pytest.raises(DalDistError, match=match):
            load_config(path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"name": "some other tool"}')
    from dal_dist.driver import run_status

    with pytest.raises(DalDistError, match="not a dal-dist run config"):
        run_status(foreign)


def test_scoring_section_sets_each_rounds_scoring_job_and_leaves_older_hashes_alone():
    plain = parse_config(BASE)
    assert plain.scoring is None and "scoring" not in plain.canonical_json()  # runs made before it: same hash
    cfg = parse_config({**BASE, "scoring": {"gpus_per_worker": 0.5, "cpus_per_worker": 6, "batch_size": 512,
                                            "precision": "fp16", "decode": "device", "start_timeout": 600}})
    assert cfg.scoring.score_options() == {"gpus_per_worker": 0.5, "cpus_per_worker": 6, "threads_per_worker": None,
                                           "batch_size": 512, "precision": "fp16", "decode": "device",
                                           "overlap": None, "start_timeout": 600}
    assert cfg.config_hash() != plain.config_hash()  # batch size and precision change the scores
    assert parse_config({**BASE, "scoring": {"gpus_per_worker": 2}}).scoring.gpus_per_worker == 2


@pytest.mark.parametrize("scoring, over, message", [
    ({"gpus_per_worker": 1.5}, {}, "scoring.gpus_per_worker: above 1 must be a whole number (Ray's rule) (got 1.5)"),
    ({"gpus_per_worker": -1}, {}, "scoring.gpus_per_worker:"),
    ({"batch_size": 0}, {}, "scoring.batch_size:"),
    ({"precision": "int8"}, {}, "scoring.precision:"),
    ({"decode": "gpu"}, {}, "scoring.decode:"),
    ({"bach_size": 64}, {}, "scoring.bach_size: unknown key"),
    ({"gpus_per_worker": 1}, {"executor": "local"}, "scoring.gpus_per_worker sizes Ray actors; executor: local"),
    ({"batch_size": 64}, {"model": {"backbone": "frozen", "embeddings": "e"}}, "scoring.batch_size applies to "
                                                                               "scoring images"),
])
def test_scoring_settings_that_cannot_apply_are_refused_by_key(scoring, over, message):
    assert message in _err({**BASE, **over, "scoring": scoring})


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_config_is_valid(example):
    cfg = load_config(example)
    assert cfg.num_rounds() >= 1
