"""Faults on real processes: SIGKILLed scoring actors, a lost node, a killed k-center shard, failed writes.

Every kill is a real SIGKILL of a real process found by its process title (`ray::<Actor>...`) among this
test process's descendants (or, for the two-node cluster, among the processes tagged for that cluster), so
no other session's Ray is ever touched. What each test proves is listed in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.scoring import read_scores_table, score_pool

MAP_WORKER = "ray::MapWorker(MapBatches(BatchScorer))"  # the title Ray gives the scoring actors


def ray_processes(prefix: str, root: psutil.Process | None = None) -> list[psutil.Process]:
    """Descendants of `root` (default: this process) whose title starts with `prefix`."""
    out = []
    for p in (root or psutil.Process()).children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(prefix):
                out.append(p)
        except psutil.Error:
            continue
    return out


class Killer(threading.Thread):
    """SIGKILLs the first process whose title starts with `busy` (an actor running a task), once."""

    def __init__(self, busy: str, find=ray_processes, delay_s: float = 0.0, timeout_s: float = 120.0):
        super().__init__(daemon=True)
        self.busy, self.find, self.delay_s, self.timeout_s = busy, find, delay_s, timeout_s
        self.killed: list[int] = []
        self._done = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.timeout_s
        while not self._done.is_set() and time.monotonic() < end:
            procs = self.find(self.busy)
            if procs:
                time.sleep(self.delay_s)
                try:
                    os.kill(procs[0].pid, signal.SIGKILL)
                    self.killed.append(procs[0].pid)
                except ProcessLookupError:
                    continue
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A 3,000-image synthetic pool (several files' worth of blocks) and a fresh mnist-cnn checkpoint."""
    from dal_dist.models import build_model, default_config, save_checkpoint
    from dal_dist.pool import synth_pool

    root = tmp_path_factory.mktemp("synth")
    synth_pool(3000, root / "pool", seed=0)
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), root / "model.pt")
    return root / "pool", root / "model.pt"


def pool_ids(pool: Path) -> np.ndarray:
    from dal_dist.pool import iter_batches

    return np.sort(np.concatenate([b.column("id").to_numpy() for b in iter_batches(pool, columns=["id"])]))


def test_scoring_actor_sigkill_mid_job_keeps_one_row_per_id(ray_local, synth, tmp_path):
    pool, ckpt = synth
    ids = pool_ids(pool)
    labeled = np.setdiff1d(ids, ids[::3])  # 1,000 rows left to score: each worker still runs several batches
    killer = Killer(MAP_WORKER + ".submit")  # an actor in the middle of a batch
    killer.start()
    try:
        # T = 12 makes each batch of 128 last 1-2 s here (mnist-cnn's dropout head dominates), a window the
        # killer (polling every 50 ms) cannot miss even on a loaded machine.
        s = score_pool(pool, ckpt, tmp_path / "scores", acquisitions="bald", mc_samples=12, workers=2,
                       labeled=labeled, batch_size=128, progress=False)
    finally:
        killer.stop()
    assert killer.killed, "no scoring actor was caught mid-batch"
    got = read_scores_table(tmp_path / "scores", columns=["id"]).column("id").to_numpy()
    want = np.setdiff1d(pool_ids(pool), labeled)
    assert len(got) == len(want) == s.rows and np.array_equal(np.sort(got), want)


# --- k-center shards ------------------------------------------------------------------------------

def _write_scores(directory: Path, emb: np.ndarray, files: int) -> Path:
    """A scores dataset (`id`, float32 `embedding`) in `files` Parquet files, ids 0..N-1 shuffled."""
    directory.mkdir(parents=True)
    ids = np.random.default_rng(0).permutation(len(emb)).astype(np.int64)
    for f, part in enumerate(np.array_split(np.arange(len(emb)), files)):
        e = emb[part]
        pq.write_table(pa.table({"id": pa.array(ids[part]), "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(e.reshape(-1), pa.float32()), e.shape[1])}), directory / f"part-{f:05d}.parquet")
    return directory


def test_kcenter_shard_sigkill_mid_selection_picks_the_same_points(ray_local, tmp_path):
    from dal_dist.selection import select_kcenter
    from dal_dist.selection.io import scan_scores
    from dal_dist.selection.kcenter_sharded import kcenter_greedy_sharded

    emb = np.random.default_rng(5).standard_normal((3000, 8)).astype(np.float32)
    path = _write_scores(tmp_path / "scores", emb, files=4)
    want_ids, want_r = select_kcenter(path, 300, seed=2, device="cpu")
    stats: dict = {}
    killer = Killer("ray::KCenterShard.step")  # a shard in the middle of a pick
    killer.start()
    try:
        ids, radii = kcenter_greedy_sharded(scan_scores(path), 300, workers=2, seed=2, actor_cpus=0, stats=stats)
    finally:
        killer.stop()
    assert killer.killed and stats["restarts"] >= 1
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(radii, want_r)


def test_badge_shard_sigkill_mid_selection_picks_the_same_points(ray_local, tmp_path):
    """A BADGE shard killed while it lowers its D²: rebuilt from its files, replayed, the draws unchanged."""
    from dal_dist.selection import select
    from dal_dist.selection.badge_sharded import badge_kmeanspp_sharded
    from dal_dist.selection.io import scan_scores

    rng = np.random.default_rng(6)
    emb = rng.standard_normal((4000, 16)).astype(np.float32)
    path = _write_scores(tmp_path / "scores", emb, files=4)
    z = rng.standard_normal((4000, 5)) * 2
    probs = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).astype(np.float32)
    for f in sorted(path.glob("*.parquet")):  # add BADGE's `probs` column, row for row
        t = pq.read_table(f)
        p = probs[t.column("id").to_numpy()]
        pq.write_table(t.append_column("probs", pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), 5)), f)
    want = select("badge", 400, scores=path, seed=3).column("id").to_numpy()
    stats: dict = {}
    killer = Killer("ray::BadgeShard.add_center")
    killer.start()
    try:
        got, _ = badge_kmeanspp_sharded(scan_scores(path), 400, width=5, workers=2, seed=3, actor_cpus=0,
                                        stats=stats)
    finally:
        killer.stop()
    assert killer.killed and stats["restarts"] >= 1
    np.testing.assert_array_equal(got, want)


def test_distributed_kcenter_names_the_nan_embedding(ray_local, tmp_path):
    from dal_dist.errors import DalDistError
    from dal_dist.selection import select

    emb = np.zeros((40, 4), np.float32)
    emb[25, 1] = np.nan
    path = _write_scores(tmp_path / "scores", emb, files=2)
    bad_id = int(np.random.default_rng(0).permutation(40)[25])
    with pytest.raises(DalDistError, match=rf"part-00001\.parquet: `embedding` has NaN or inf values \(id {bad_id}\)"):
        select("kcenter", 3, scores=path, distributed=True, workers=2, device="cpu")


# --- a node lost mid-scoring (a real two-node cluster on 127.0.0.1) ---------------------------------

@pytest.fixture(scope="module")
def two_nodes():
    """Head + one worker node (1 CPU each) with its own process tag; every process is gone afterwards."""
    from dal_dist.benchmarks.multinode import LocalCluster, tagged_pids

    cluster = LocalCluster(cpus_per_node=1)
    node2 = f"{cluster.tag}-n1"  # what `add_node` will name it
    try:
        cluster.start(1)
        assert cluster.add_node() == node2
        yield cluster, node2
    finally:
        _sigkill_node(node2)
        _sigkill_node(cluster.tag)  # a test cluster needs no graceful stop; `stop` then finds nothing left
        cluster.stop()
        assert not tagged_pids(cluster.tag) and not tagged_pids(node2)


def _sigkill_node(tag: str) -> int:
    """SIGKILL every process of one node (raylet, workers, agents) until none is left."""
    from dal_dist.benchmarks.multinode import tagged_pids

    killed = 0
    for _ in range(20):
        pids = tagged_pids(tag)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def test_second_node_sigkilled_mid_scoring_keeps_one_row_per_id(two_nodes, synth, tmp_path):
    import json
    import subprocess
    import sys

    from dal_dist.benchmarks.multinode import tagged_pids

    cluster, node2 = two_nodes
    pool, ckpt = synth
    repo = Path(__file__).resolve().parents[2]
    # Ray Data hands blocks to the first actor that is up; mnist-cnn drains this pool on one actor before
    # the second node's is ready, unless the pool waits for both: then each actor gets half the blocks.
    # T = 30 keeps each of its batches long enough (1-2 s here: mnist-cnn's dropout head dominates) for the
    # /proc poll below to see it running.
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(repo),
           "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "180"}

    def title(pid: int) -> str:
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            return ""

    def attempt(out_dir: Path) -> tuple[bool, int, str, int | None]:
        """One scoring job; SIGKILL the second node once its actor is seen mid-batch."""
        log = open(out_dir.parent / f"{out_dir.name}.log", "w+")  # a file, not a pipe: nobody reads it while we poll
        driver = subprocess.Popen(
            [sys.executable, str(repo / "jobs" / "score_pool.py"), "--pool", str(pool), "--checkpoint", str(ckpt),
             "--out", str(out_dir), "--acquisition", "bald", "--mc-samples", "30", "--workers", "2",
             "--batch-size", "64"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline, actor, caught = time.monotonic() + 240, None, False
            while driver.poll() is None and time.monotonic() < deadline and not caught:
                if actor is None:  # the second node's scoring actor (scanning /proc is slow: once it exists, watch it)
                    actor = next((pid for pid in tagged_pids(node2) if title(pid).startswith(MAP_WORKER)), None)
                else:
                    caught = title(actor).startswith(MAP_WORKER + ".submit")
                time.sleep(0 if caught else 0.02)
            killed = _sigkill_node(node2) if caught else 0  # the node's raylet, its actor and the rest
            driver.wait(timeout=240)
        finally:
            if driver.poll() is None:
                driver.kill()
            log.seek(0)
            out = log.read()
            log.close()
        return caught, killed, out, driver.returncode

    # Where Ray puts the two zero-CPU actors is its choice: a job whose second-node actor ran no batch proves
    # nothing about a node kill, so it is run again (at most 4 jobs); the kill itself is never retried.
    for k in range(4):
        scores = tmp_path / f"scores-{k}"
        caught, killed, out, returncode = attempt(scores)
        if caught:
            break
    assert caught and killed > 0, f"no scoring actor was caught mid-batch on the second node:\n{out[-3000:]}"
    assert returncode == 0, out[-4000:]
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    got = read_scores_table(scores, columns=["id"]).column("id").to_numpy()
    assert summary["rows"] == len(got) and np.array_equal(np.sort(got), pool_ids(pool))


# --- a disk that fills up -------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root, as in the CI container); skipped where mounting is not allowed."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file (ENOSPC from the next write on)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_full_disk_while_writing_scores_keeps_the_old_scores(ray_local, synth, small_disk):
    from dal_dist.errors import StorageError

    pool, ckpt = synth
    out = small_disk / "scores"
    labeled = pool_ids(pool)[:-600]  # 600 rows to score
    out.mkdir()  # earlier published scores (a scores file, which is all --overwrite may replace)
    from dal_dist.scoring import output_schema

    old = [{"id": i, "bald": b, "embedding": [0.0] * 4, "pred": 0, "confidence": 0.5, "labeled": False}
           for i, b in ((1, 0.5), (2, 0.25))]
    pq.write_table(pa.Table.from_pylist(old, schema=output_schema(["bald"], 4)), out / "part-0.parquet")
    before = read_scores_table(out)
    filler = _fill(small_disk)
    with pytest.raises(StorageError, match=r"scoring failed on a file operation \(.*No space left on device\)"):
        score_pool(pool, ckpt, out, acquisitions="bald", mc_samples=4, workers=1, labeled=labeled,
                   overwrite=True, progress=False)
    assert read_scores_table(out).equals(before)  # the published scores are intact and readable
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "scores"]  # no staging left behind
    filler.unlink()


def test_full_disk_while_appending_to_the_ledger_keeps_earlier_rounds(small_disk):
    from dal_dist.errors import StorageError
    from dal_dist.driver.ledger import LabelLedger

    led = LabelLedger(small_disk / "run")
    led.append(0, np.array([3, 1, 2]), np.array([0, 1, 1]), "simulated")
    filler = _fill(small_disk)
    with pytest.raises(StorageError, match=r"round-0001\.parquet: cannot write round 1 of the ledger "
                                           r"\(.*No space left on device\); nothing was recorded"):
        led.append(1, np.array([7, 8]), np.array([2, 2]), "simulated")
    assert sorted(p.name for p in led.dir.iterdir()) == ["round-0000.parquet"]  # no temp file either
    assert led.ids().tolist() == [3, 1, 2] and led.count() == 3
    filler.unlink()
    assert led.append(1, np.array([7, 8]), np.array([2, 2]), "simulated") and led.count() == 5


# --- a label import killed between writing the ledger file and publishing it ------------------------

def test_label_import_killed_before_publishing_then_resumed_gives_the_same_ledger(synth, tmp_path, monkeypatch):
    import subprocess
    import sys

    import dal_dist.driver as driver
    import dal_dist.driver.rounds as rounds
    from dal_dist.driver import layout
    from dal_dist.driver.state import pending_label_round
    from dal_dist.driver.config import parse_config
    from dal_dist.driver.ledger import LabelLedger
    from dal_dist.driver.labels import import_labels
    from dal_dist.driver.oracle import SimulatedOracle

    pool, _ = synth
    monkeypatch.setattr(rounds, "last_round", lambda cfg: 0)  # round 0 only: select, human labels, manifest
    cfg = {"pool": str(pool), "oracle": "human", "strategy": {"name": "entropy"}, "initial": {"kind": "random",
           "size": 6}, "budget": 4, "rounds": 1, "final_train": False, "seed": 5}
    runs = {}
    for name in ("reference", "killed"):
        runs[name] = tmp_path / name
        assert driver.run(parse_config(cfg), runs[name]).status == "waiting_for_labels"
    sel = layout.read_selection(runs["killed"], 0)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in zip(sel, SimulatedOracle(pool).labels(sel))))
    import_labels(runs["reference"], labels_csv)
    # The import process dies after the ledger file is fully written, before the rename that publishes it.
    kill_at_publish = ("import os, sys; from dal_dist.driver.labels import import_labels; "
                       "os.replace = lambda *a: os._exit(137); import_labels(sys.argv[1], sys.argv[2])")
    p = subprocess.run([sys.executable, "-c", kill_at_publish, str(runs["killed"]), str(labels_csv)],
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 137, p.stderr[-2000:]
    led = LabelLedger(runs["killed"])
    assert led.count() == 0 and pending_label_round(runs["killed"]) == 0  # nothing half-applied
    assert [f.name for f in led.dir.iterdir() if f.name.endswith(".tmp")]  # the unpublished temp file
    import_labels(runs["killed"], labels_csv)  # the lock died with the process; importing again works
    for run_dir in runs.values():
        assert driver.run(None, run_dir, resume=True).status == "done"
    assert LabelLedger(runs["killed"]).table().equals(LabelLedger(runs["reference"]).table())
    assert not [f for f in led.dir.iterdir() if f.name.endswith(".tmp")]  # resume cleared the scratch


def test_verification_refuses_a_duplicated_row_even_when_the_count_matches(tmp_path):
    from dal_dist.errors import DalDistError
    from dal_dist.scoring.publish import verify_staging

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": pa.array([0, 1, 2], pa.int64())}), tmp_path / "data" / "a_000000-0.parquet")
    pq.write_table(pa.table({"id": pa.array([2, 3], pa.int64())}), tmp_path / "data" / "a_000001-0.parquet")
    with pytest.raises(DalDistError, match=r"scoring wrote ids more than once, e\.g\. \[2\] .*output not published"):
        verify_staging(tmp_path, expected=5)  # 5 rows, but id 2 twice (and id 4 lost)
    with pytest.raises(DalDistError, match=r"scoring wrote 5 rows \+ 0 rejects, expected 6"):
        verify_staging(tmp_path, expected=6)
    assert verify_staging(tmp_path / "missing", expected=0) == (0, 0)


# --- corrupt state files --------------------------------------------------------------------------

def test_truncated_ledger_file_is_a_clear_error_naming_it(tmp_path):
    from dal_dist.errors import DalDistError
    from dal_dist.driver.ledger import LabelLedger

    led = LabelLedger(tmp_path)
    led.append(0, np.array([1, 2, 3]), np.array([0, 1, 2]), "simulated")
    f = led.path(0)
    f.write_bytes(f.read_bytes()[:-30])  # e.g. copied off a full disk by hand
    with pytest.raises(DalDistError, match=r"round-0000\.parquet: ledger file unreadable \(truncated or corrupt\?\)"):
        led.table()


def test_truncated_scores_file_is_a_clear_error_naming_it(tmp_path):
    from dal_dist.errors import DalDistError
    from dal_dist.selection import select

    path = _write_scores(tmp_path / "scores", np.zeros((20, 4), np.float32), files=2)
    f = path / "part-00001.parquet"
    f.write_bytes(f.read_bytes()[:-30])
    with pytest.raises(DalDistError, match=r"part-00001\.parquet: not a readable Parquet file"):
        select("kcenter", 3, scores=path)
