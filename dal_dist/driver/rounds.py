"""The driver: rounds of train → evaluate → score → select → label, with all state in the run directory.

`run` takes the run's lock, records (or checks) its config, and runs the missing steps of each round in
order; what each step does is in `driver.steps`, where its outputs go in `driver.layout`, and how far a run
got is read back from disk by `driver.state`. A step that fails for a cluster reason (a lost worker or
node) is redone from scratch: it is deterministic and publishes nothing until it succeeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from dal_dist.atomic import write_bytes_atomic, write_json_atomic
from dal_dist.driver import layout
from dal_dist.driver.config import RunConfig
from dal_dist.driver.state import (RunState, last_round, local_run_dir, read_stored_config, reached_target,
                                   remaining_steps, resolve_state, run_lock, step_done, steps_of)
from dal_dist.driver.steps import RAY_STEPS, STEPS, Paused, RoundContext
from dal_dist.errors import DalDistError
from dal_dist.fs import is_local

CRASH_ENV = "DAL_DIST_TEST_CRASH_AT"  # tests: "round2:score" dies at the step's start, "round2:score+1.5" 1.5 s into it
RAY_STEP_ATTEMPTS = 3  # train/score attempts before a cluster failure ends the driver (resume retries more)


@dataclass
class RunOutcome:
    """How a driver invocation ended: `done`, or `waiting_for_labels` (human oracle; exit 0)."""

    status: str
    message: str
    round: int | None = None


def run(config: RunConfig | None, run_dir: str | os.PathLike, resume: bool = False,
        log: Callable[[str], None] | None = None, use_gpu: bool | None = None) -> RunOutcome:
    """Start (or with `resume`, continue) a run in `run_dir`; returns when done or waiting for human labels.

    `use_gpu` (resume only) moves the rest of the run to or off a GPU: where the work runs is not part of
    what the run computes, so the stored config and its hash stay; each round's train.json records it.
    """
    run_dir = local_run_dir(run_dir)
    if config is None and not resume:
        raise DalDistError("a new run needs a config (`dal-dist run --config FILE`)")
    if use_gpu is not None and not resume:
        raise DalDistError("use_gpu overrides the stored config of a resumed run; a new run sets train.use_gpu")
    if resume:
        read_stored_config(run_dir)  # a clear error for a wrong path, before anything is created there
    else:
        check_apart_from_pools(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        state = _start(config, run_dir, resume)
        if use_gpu is not None:
            state = dataclasses.replace(state, config=with_device(state.config, use_gpu))
        return _run_rounds(RoundContext(state, log or (lambda s: None)))


def check_apart_from_pools(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory equal to or inside its pool (or test pool) would write the run into that dataset."""
    for what, pool in (("pool", cfg.pool), ("test_pool", cfg.test_pool)):
        local = is_local(pool) if pool is not None and not pool.startswith("builtin:") else None
        if local is None:
            continue
        root = os.path.realpath(local)
        if os.path.realpath(run_dir) == root or os.path.realpath(run_dir).startswith(root.rstrip("/") + "/"):
            raise DalDistError(f"run_dir (--run-dir) {run_dir}: is, or is inside, the {what} {pool}; a run "
                               "directory must be apart from its input datasets")


def with_device(cfg: RunConfig, use_gpu: bool) -> RunConfig:
    """`cfg` with every GPU switch (task model training, SRAAL's networks) set to `use_gpu`."""
    update: dict[str, Any] = {"train": cfg.train.model_copy(update={"use_gpu": use_gpu})}
    if cfg.strategy.sraal is not None:
        update["strategy"] = cfg.strategy.model_copy(
            update={"sraal": cfg.strategy.sraal.model_copy(update={"use_gpu": use_gpu})})
    return cfg.model_copy(update=update)


def _start(config: RunConfig | None, run_dir: Path, resume: bool) -> RunState:
    """Check or record the config, clear scratch left by a killed driver, resolve the pools."""
    import yaml

    stored_path = run_dir / layout.CONFIG_JSON
    if resume:
        stored, stored_hash = read_stored_config(run_dir)
        if config is not None and config.config_hash() != stored_hash:
            raise DalDistError(f"{run_dir}: the given config (hash {config.config_hash()[:12]}) differs from the "
                               f"one this run started with (hash {stored_hash[:12]}, {stored_path}); "
                               "resume without --config or start a new run directory")
        cfg, h = stored, stored_hash
    else:
        if stored_path.exists():
            raise DalDistError(f"{run_dir}: already holds a run (config.json); continue it with "
                               f"`dal-dist run --resume {run_dir}` or choose a new --run-dir")
        assert config is not None
        cfg, h = config, config.config_hash()
    layout.clear_scratch(run_dir)
    state = resolve_state(run_dir, cfg, h)  # a bad pool fails here, before the run directory claims a config
    if not resume:
        body = cfg.model_dump(mode="json")
        write_bytes_atomic(run_dir / layout.CONFIG_YAML, yaml.safe_dump(body, sort_keys=False).encode())
        write_json_atomic(stored_path, {"config_hash": h, "config": body})
    return state


@contextlib.contextmanager
def _crash_hook(r: int, step: str) -> Iterator[None]:
    """Test-only fault injection: a real process death (`os._exit(137)`) at or inside a named step.

    "+delay" dies that long into the step, or at its end if it finishes sooner: never in a later step (a
    fast step would otherwise take the death into the next steps and past the crash points that follow).
    """
    spec = os.environ.get(CRASH_ENV)
    delay = None
    for item in (spec or "").split(","):
        point, _, after = item.strip().partition("+")
        if point == f"round{r}:{step}":
            delay = after
    if delay is None:
        yield
        return
    if not delay:
        os._exit(137)
    timer = threading.Timer(float(delay), os._exit, args=(137,))
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException:
        timer.cancel()  # the step failed on its own: its error is what the run ends with
        raise
    os._exit(137)


def _run_rounds(ctx: RoundContext) -> RunOutcome:
    """Every round in order until the run is complete, reaches its target accuracy, or waits for labels."""
    try:
        for r in range(last_round(ctx.cfg) + 1):
            _run_round(ctx, r)
            if reached_target(ctx.run_dir, ctx.cfg, r):
                return RunOutcome("done", f"run complete: round {r}'s model reached test accuracy "
                                          f"{ctx.cfg.stop_at_accuracy} ({ctx.ledger.count()} labels in {ctx.ledger.dir})")
    except Paused as p:
        return RunOutcome("waiting_for_labels", p.message, p.round)
    return RunOutcome("done", f"run complete: {ctx.cfg.num_rounds()} rounds, {ctx.ledger.count()} labels in "
                              f"{ctx.ledger.dir}")


def _run_round(ctx: RoundContext, r: int) -> None:
    """The steps of round r that have no output yet; each one's time goes into timings.json."""
    rd = layout.round_dir(ctx.run_dir, r)
    if step_done(ctx.run_dir, ctx.cfg, r, "manifest"):
        return
    rd.mkdir(parents=True, exist_ok=True)
    for step in steps_of(ctx.cfg, r):
        if step not in remaining_steps(ctx.run_dir, ctx.cfg, r):
            continue
        t0 = time.monotonic()
        try:
            with _crash_hook(r, step):
                _run_step(ctx, r, step, rd)
        except OSError as e:  # full disk, permissions: the step's output was never published
            raise DalDistError(f"round {r}: step {step} failed ({e}); the outputs of earlier steps are intact, "
                               f"fix the cause and run `dal-dist run --resume {ctx.run_dir}`") from e
        seconds = time.monotonic() - t0
        ctx.log(f"round {r}: {step} done in {seconds:.1f} s")
        if step != "manifest":
            timings = layout.read_json(rd / layout.TIMINGS_JSON) or {}
            write_json_atomic(rd / layout.TIMINGS_JSON, {**timings, step: round(seconds, 3)})


def _run_step(ctx: RoundContext, r: int, step: str, rd: Path) -> None:
    """Run one step; a Ray step that fails for a cluster reason (a worker or node lost) is redone from
    scratch, which is safe because it is deterministic and publishes nothing until it succeeds."""
    for attempt in range(1, RAY_STEP_ATTEMPTS + 1):
        try:
            return STEPS[step](ctx, r, rd)
        except (DalDistError, OSError, KeyboardInterrupt):
            raise
        except Exception as e:
            if step not in RAY_STEPS or attempt == RAY_STEP_ATTEMPTS:
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            ctx.log(f"round {r}: {step} failed ({type(e).__name__}: {first}); "
                    f"retrying ({attempt + 1}/{RAY_STEP_ATTEMPTS})")
