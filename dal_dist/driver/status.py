"""`dal-dist status`: where a run stands, read from its directory without taking the lock."""

from __future__ import annotations

import os
from typing import Any

from dal_dist.driver import layout
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.state import last_round, local_run_dir, next_step, reached_target, read_stored_config, step_done
from dal_dist.locks import is_locked


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Rounds done, labels used, latest metrics and what happens next (read-only; takes no lock)."""
    run_dir = local_run_dir(run_dir)
    cfg, h = read_stored_config(run_dir)
    total = cfg.num_rounds()
    done = [r for r in range(1, total + 1) if step_done(run_dir, cfg, r, "manifest")]
    curve, latest = [], None
    for r in range(1, last_round(cfg) + 1):
        m = layout.read_json(layout.round_dir(run_dir, r) / layout.METRICS_JSON)
        if m:
            curve.append({"round": r, "labels": m.get("labels"), "test_accuracy": m.get("test_accuracy")})
            latest = m
    nxt = next_step(run_dir, cfg)
    if nxt is None:
        what = "nothing: the run is complete"
    elif nxt[1] == "label" and cfg.oracle == "human":
        what = (f"round {nxt[0]} waits for human labels: label {layout.round_dir(run_dir, nxt[0]) / 'to_label'}, "
                f"then `dal-dist labels import FILE --run-dir {run_dir}` and `dal-dist run --resume {run_dir}`")
    else:
        what = f"round {nxt[0]}: {nxt[1]} (`dal-dist run --resume {run_dir}`)"
    return {
        "run_dir": str(run_dir), "config_hash": h, "strategy": cfg.strategy.name, "oracle": cfg.oracle,
        "rounds_completed": len(done), "rounds_total": total,
        "initial_done": step_done(run_dir, cfg, 0, "manifest"),
        "final_done": cfg.final_train and step_done(run_dir, cfg, total + 1, "manifest"),
        "labels": LabelLedger(run_dir).count(),
        "latest_metrics": latest, "curve": curve,
        "next": None if nxt is None else {"round": nxt[0], "step": nxt[1]},
        "next_action": what, "complete": nxt is None, "locked": is_locked(run_dir),
        "target_reached_round": next((r for r in range(1, last_round(cfg) + 1)
                                      if reached_target(run_dir, cfg, r)), None),
    }
