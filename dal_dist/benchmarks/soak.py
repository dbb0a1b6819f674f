"""Soak: many consecutive active-learning rounds while scoring actors are SIGKILLed at random.

Runs the real driver (`dal_dist.driver.run`) on a small synthetic pool (`dal_dist.pool.synth`) on a local
Ray that this process starts. In a random subset of the rounds a watcher thread SIGKILLs one scoring
actor in the middle of a batch (a real process death, found by its title among this process's
descendants, so no other Ray on the host is touched); Ray Data restarts the actor and retries its work.
After every round it checks what must hold exactly and prints one JSON line:

- the round completed (its manifest exists) and the ledger holds exactly initial + r x budget rows,
  each id once, each label the pool's hidden label, round r's rows = round r's selection in pick order;
- the round's scores hold exactly one row per id that was unlabeled before the round;
- the driver's RSS (growth from round 2 to the last round is the leak signal).

The last line is the summary (`rounds_ok`, `kills`, `rss_growth_2_to_last`). A program, not a test:

    python -m dal_dist.benchmarks.soak [--rounds 20] [--pool 2000] [--kill-prob 0.5] [--seed 0]
    dal-dist bench soak ...     (same flags)

About 30-40 s a round on a quiet 2-core machine (training starts Ray Train every round).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SCORING_ACTOR_BUSY = "ray::MapWorker(MapBatches(BatchScorer)).submit"  # Ray's title for an actor mid-batch


def busy_scoring_actors() -> list[int]:
    """Pids of this process's descendants that are scoring actors running a batch right now."""
    import psutil

    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(SCORING_ACTOR_BUSY):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


class ActorKiller(threading.Thread):
    """While armed, SIGKILLs the first busy scoring actor it sees (after a random delay), then disarms."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.rng = rng
        self.armed = threading.Event()
        self.done = threading.Event()
        self.kills: list[int] = []

    def run(self) -> None:
        while not self.done.is_set():
            if self.armed.is_set() and (pids := busy_scoring_actors()):
                time.sleep(self.rng.uniform(0.0, 0.3))
                if self.armed.is_set():
                    try:
                        os.kill(pids[0], signal.SIGKILL)
                        self.kills.append(pids[0])
                        self.armed.clear()
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)


def check_round(run_dir: Path, pool_ids: np.ndarray, oracle: Any, r: int, initial: int, budget: int) -> dict[str, Any]:
    """The exact invariants after round r (see the module docstring); raises AssertionError with the reason."""
    from dal_dist.driver.ledger import LabelLedger
    from dal_dist.driver.layout import read_selection, round_dir
    from dal_dist.scoring import read_scores_table

    rd = round_dir(run_dir, r)
    assert (rd / "manifest.json").is_file(), f"round {r}: no manifest"
    ledger = LabelLedger(run_dir)
    t = ledger.table()
    ids = t.column("id").to_numpy()
    assert len(ids) == initial + r * budget, f"round {r}: ledger has {len(ids)} rows"
    assert len(np.unique(ids)) == len(ids), f"round {r}: an id is in the ledger twice"
    assert np.array_equal(t.column("label").to_numpy(), oracle.labels(ids)), f"round {r}: a wrong label"
    mine = ids[t.column("round").to_numpy() == r]
    assert np.array_equal(mine, read_selection(run_dir, r)), f"round {r}: ledger round != selection"
    scored = np.sort(read_scores_table(rd / "scores", columns=["id"]).column("id").to_numpy())
    unlabeled = np.setdiff1d(pool_ids, ledger.ids(before_round=r))
    assert np.array_equal(scored, unlabeled), f"round {r}: {len(scored)} scored rows for {len(unlabeled)} ids"
    return {"labels": int(len(ids)), "scored": int(len(scored))}


def run(rounds: int = 20, pool_rows: int = 2000, kill_prob: float = 0.5, seed: int = 0, workers: int = 2,
        budget: int = 10, initial: int = 20, emit=print) -> dict[str, Any]:
    """Soak the driver for `rounds` rounds; emits one dict per round, returns the summary."""
    import psutil
    import ray

    from dal_dist.driver.config import parse_config
    from dal_dist.driver import run as run_loop
    from dal_dist.driver.oracle import SimulatedOracle
    from dal_dist.pool import iter_batches, synth_pool

    me = psutil.Process()
    rng = random.Random(seed)
    killer = ActorKiller(rng)
    killer.start()
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dal-soak-") as tmp:
        pool, run_dir = Path(tmp) / "pool", Path(tmp) / "run"
        synth_pool(pool_rows, pool, seed=seed)
        pool_ids = np.sort(np.concatenate([b.column("id").to_numpy() for b in iter_batches(pool, columns=["id"])]))
        oracle = SimulatedOracle(pool)
        cfg = parse_config({"pool": str(pool), "strategy": {"name": "bald", "mc_samples": 4},
                            "initial": {"kind": "random", "size": initial}, "budget": budget, "rounds": rounds,
                            "train": {"epochs": 1, "batch_size": 32, "workers": 1}, "final_train": False,
                            "workers": workers, "seed": seed})
        ray.init(include_dashboard=False, log_to_driver=False)  # a local Ray: its workers are our descendants
        state = {"t": time.monotonic(), "kill_planned": False, "kills_before": 0}

        def on_step(line: str) -> None:
            m = re.match(r"round (\d+): (\w+) done", line)
            if not m:
                return
            r, step = int(m.group(1)), m.group(2)
            if step == "evaluate":  # scoring is next: maybe kill one of its actors
                state["kill_planned"] = rng.random() < kill_prob
                state["kills_before"] = len(killer.kills)
                if state["kill_planned"]:
                    killer.armed.set()
            elif step == "score":
                killer.armed.clear()
            elif step == "manifest" and r >= 1:
                row = {"bench": "soak", "round": r, "seconds": round(time.monotonic() - state["t"], 1),
                       "kill_planned": state["kill_planned"],
                       "actors_killed": len(killer.kills) - state["kills_before"],
                       "driver_rss_mb": round(me.memory_info().rss / 2**20, 1)}
                try:
                    row.update(ok=True, **check_round(run_dir, pool_ids, oracle, r, initial, budget))
                except AssertionError as e:
                    row.update(ok=False, error=str(e))
                rows.append(row)
                emit(row)
                state["t"] = time.monotonic()

        error = None
        try:
            outcome = run_loop(cfg, run_dir, log=on_step)
            if outcome.status != "done":
                error = f"run ended {outcome.status}: {outcome.message}"
        except Exception as e:  # reported, not raised: the summary says which round failed
            error = f"{type(e).__name__}: {e}"
        finally:
            killer.done.set()
            ray.shutdown()
    rss = {row["round"]: row["driver_rss_mb"] for row in rows}
    last = max(rss) if rss else None
    growth = (rss[last] - rss[2]) / rss[2] if last and 2 in rss and last > 2 else None
    return {"bench": "soak", "summary": True, "rounds": rounds, "rounds_ok": sum(r["ok"] for r in rows),
            "all_ok": error is None and len(rows) == rounds and all(r["ok"] for r in rows),
            "kills": len(killer.kills), "rounds_with_kill": sum(r["actors_killed"] > 0 for r in rows),
            "rss_mb_round2": rss.get(2), "rss_mb_last": rss.get(last) if last else None,
            "rss_growth_2_to_last": growth, "rss_ok": growth is not None and growth < 0.10,
            "seconds": round(time.monotonic() - t_start, 1), "pool_rows": pool_rows,
            "workers": workers, "host_cpus": os.cpu_count(), "loadavg": os.getloadavg()[0], "error": error}


def main(rounds: int = 20, pool_rows: int = 2000, kill_prob: float = 0.5, seed: int = 0, workers: int = 2) -> None:
    """Print one JSON line per round, then the summary line."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    emit = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    emit(run(rounds=rounds, pool_rows=pool_rows, kill_prob=kill_prob, seed=seed, workers=workers, emit=emit))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--pool", type=int, default=2000, help="synthetic pool size")
    p.add_argument("--kill-prob", type=float, default=0.5, help="chance that a round's scoring loses an actor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="scoring actors")
    a = p.parse_args()
    main(rounds=a.rounds, pool_rows=a.pool, kill_prob=a.kill_prob, seed=a.seed, workers=a.workers)
