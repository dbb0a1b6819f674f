"""A pool is published whole (issue 16): a failed or interrupted ingest/synth leaves nothing at --out, readers
refuse an unfinished write, a re-run into the same --out works, and a non-empty --out is refused by name.

Local paths use a hidden staging directory renamed into place; the object-store path (in-place write behind
`_dal_pool.incomplete`) runs for real on a SubTreeFileSystem registered under a test scheme, which pyarrow
treats as a non-local filesystem exactly as it treats S3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.pool import (
    INCOMPLETE_MARKER, PoolWriter, ingest_mnist_idx, ingest_npz, pool_files, pool_info, pool_schema, raw_image_batch,
    validate_pool, write_pool,
)
from dal_dist.pool.publish import PoolStage

SCHEME = "dalpool-test"
REPO = Path(__file__).resolve().parents[2]


def _idx_images(path: Path, declared: int, present: int, side: int = 4) -> Path:
    """An IDX image file whose header declares `declared` images of side×side while holding `present`."""
    px = np.random.default_rng(0).integers(0, 256, size=(present, side, side), dtype=np.uint8)
    head = b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in (declared, side, side))
    path.write_bytes(head + px.tobytes())
    return path


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _npz(path: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.integers(0, 256, size=(n, 3, 3), dtype=np.uint8), y=rng.integers(0, 3, size=n))
    return path


@pytest.fixture
def store(tmp_path):
    """`dalpool-test://x` -> tmp_path/store/x on a non-local pyarrow filesystem."""
    (tmp_path / "store").mkdir()
    fsx.register_filesystem(SCHEME, pafs.SubTreeFileSystem(str(tmp_path / "store"), pafs.LocalFileSystem()))
    yield tmp_path / "store"
    fsx.register_filesystem(SCHEME, None)


# ------------------------------------------------------------------------------------- local paths
def test_truncated_idx_publishes_nothing_and_a_rerun_into_the_same_out_works(tmp_path: Path) -> None:
    """The issue's case: header says 70,000 images, data ends at 66,000 (after a whole 65,536-row file)."""
    src = tmp_path / "src"
    src.mkdir()
    bad = _idx_images(src / "bad-idx3-ubyte", declared=70_000, present=66_000)
    out = tmp_path / "pool"
    with pytest.raises(DalDistError, match=r"bad-idx3-ubyte: truncated: header says 70000 images of 4x4, "
                                           r"data ends inside image 66000"):
        ingest_mnist_idx(bad, None, out)
    assert not out.exists() and _entries(tmp_path) == ["src"]  # no part file, no _rejects, no staging
    with pytest.raises(DalDistError, match=r"pool: pool not found"):
        pool_info(out)
    good = _idx_images(src / "good-idx3-ubyte", declared=66_000, present=66_000)
    result = ingest_mnist_idx(good, None, out)
    assert (result.rows, len(result.files)) == (66_000, 2)
    assert result.files == [str(out / "part-00000.parquet"), str(out / "part-00001.parquet")]
    assert validate_pool(out).rows == 66_000 and _entries(tmp_path) == ["pool", "src"]


def test_an_exception_in_the_middle_publishes_nothing(tmp_path: Path) -> None:
    schema = pool_schema(has_label=False)
    images = np.zeros((25, 2, 2, 1), np.uint8)
    out = tmp_path / "deep" / "er" / "pool"  # parents created for the staging directory are removed again
    with pytest.raises(RuntimeError, match="source died"):
        with PoolWriter(out, schema, file_rows=10, row_group_rows=4) as w:
            w.write(raw_image_batch(np.arange(25), images, schema=schema))
            assert len(w.files) == 2  # two whole files written (in staging) before the failure
            raise RuntimeError("source died")
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError, ValueError])
def test_ingest_interrupted_between_chunks_publishes_nothing(tmp_path: Path, monkeypatch, exc) -> None:
    import dal_dist.pool.ingest as ingest

    file = _npz(tmp_path / "d.npz")
    real, calls = ingest._npz_pixels, []

    def fail_on_third_chunk(x, scale):
        calls.append(1)
        if len(calls) == 3:
            raise exc()
        return real(x, scale)

    monkeypatch.setattr(ingest, "_npz_pixels", fail_on_third_chunk)
    with pytest.raises(exc):
        ingest_npz(file, tmp_path / "pool", chunk_rows=4)
    assert _entries(tmp_path) == ["d.npz"]
    monkeypatch.setattr(ingest, "_npz_pixels", real)
    assert ingest_npz(file, tmp_path / "pool", chunk_rows=4).rows == 20  # the re-run takes the same --out


def test_synth_interrupted_publishes_nothing(tmp_path: Path, monkeypatch) -> None:
    import dal_dist.pool.synth as synth

    real, calls = synth.deform_block, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synth, "deform_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synth.synth_pool(3 * synth.SYNTH_BLOCK, tmp_path / "pool", chunk_size=synth.SYNTH_BLOCK)
    assert _entries(tmp_path) == []


def test_zero_rows_publishes_nothing_and_names_a_reject(tmp_path: Path) -> None:
    np.savez(tmp_path / "nan.npz", x=np.full((3, 2, 2), np.nan, np.float32))
    with pytest.raises(DalDistError, match=r"pool: no rows could be taken \(3 rejected; e\.g\. id 0: "
                                           r"image: NaN/inf pixel values\); nothing was written"):
        ingest_npz(tmp_path / "nan.npz", tmp_path / "pool")
    assert _entries(tmp_path) == ["nan.npz"]  # no _rejects.parquet left to block the re-run


def test_out_that_is_not_empty_is_refused_by_name_and_left_alone(tmp_path: Path) -> None:
    file = _npz(tmp_path / "d.npz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "NOTES.txt").write_text("mine")
    with pytest.raises(DalDistError, match=r"out: is not empty \(holds NOTES.txt\); choose a new or empty --out"):
        ingest_npz(file, out)
    assert _entries(out) == ["NOTES.txt"] and (out / "NOTES.txt").read_text() == "mine"
    assert _entries(tmp_path) == ["d.npz", "out"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DalDistError, match=r"afile: exists and is not a directory"):
        ingest_npz(file, tmp_path / "afile")
    (out / "NOTES.txt").unlink()  # an empty directory is taken (replaced by the pool)
    assert ingest_npz(file, out).rows == 20 and validate_pool(out).rows == 20
    with pytest.raises(DalDistError, match=r"out: already holds a pool \(_dal_pool.json, _rejects.parquet, "
                                           r"part-00000.parquet\)"):
        ingest_npz(file, out)


def test_readers_refuse_an_unfinished_write_by_name(tmp_path: Path, monkeypatch) -> None:
    """A hard kill leaves the staging directory with its marker: pointed at it, every reader refuses."""
    monkeypatch.setattr(PoolStage, "discard", lambda self: None)  # as if the process had been killed
    with pytest.raises(RuntimeError):
        with PoolWriter(tmp_path / "pool", pool_schema(has_label=False), file_rows=4) as w:
            w.write(raw_image_batch(np.arange(9), np.zeros((9, 2, 2, 1), np.uint8)))
            raise RuntimeError("killed")
    (staging,) = tmp_path.iterdir()
    assert staging.name.startswith(".pool.staging-") and not (tmp_path / "pool").exists()
    assert INCOMPLETE_MARKER in _entries(staging) and "part-00000.parquet" in _entries(staging)
    for read in (validate_pool, pool_files, pool_info):
        with pytest.raises(DalDistError, match=rf"{staging.name}: incomplete pool: .* did not finish .* "
                                               r"re-run `dal-dist pool ingest`"):
            read(staging)


def test_sigint_and_sigkill_during_ingest(tmp_path: Path) -> None:
    """Real signals to a real ingest process, sent once a whole part file has been written."""
    images = _idx_images(tmp_path / "img-idx3-ubyte", declared=70_000, present=70_000)
    script = textwrap.dedent(f"""
        import sys, time
        from dal_dist.pool import write, ingest_mnist_idx
        real = write.PoolWriter.write
        def slow(self, batch):
            real(self, batch)
            if self.files:
                print("READY", flush=True)
                time.sleep(120)
        write.PoolWriter.write = slow
        ingest_mnist_idx({str(images)!r}, None, sys.argv[1], chunk_rows=5000)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / f"pool-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode != 0 and not out.exists()
        leftovers = [n for n in _entries(tmp_path) if n.startswith(f".{out.name}.staging-")]
        assert len(leftovers) == (0 if sig == signal.SIGINT else 1)  # SIGKILL: only the hidden staging stays
        assert ingest_mnist_idx(images, None, out).rows == 70_000  # the re-run takes the same --out


# ----------------------------------------------------------------------------------- object stores
def test_object_store_failure_leaves_nothing_and_rerun_works(store: Path, tmp_path: Path) -> None:
    out = f"{SCHEME}://pools/p"
    with pytest.raises(RuntimeError):
        with PoolWriter(out, pool_schema(has_label=False), file_rows=4) as w:
            w.write(raw_image_batch(np.arange(9), np.zeros((9, 2, 2, 1), np.uint8)))
            assert INCOMPLETE_MARKER in _entries(store / "pools" / "p")  # marker first, parts behind it
            raise RuntimeError("upload died")
    assert not (store / "pools" / "p").exists()
    x = np.zeros((9, 2, 2, 1), np.uint8)
    result = write_pool(out, x, chunk_rows=4)
    assert _entries(store / "pools" / "p") == ["_dal_pool.json", "_rejects.parquet", "part-00000.parquet"]
    assert result.files == [f"{out}/part-00000.parquet"] and validate_pool(out).rows == 9


def test_object_store_killed_write_is_refused_then_cleared_by_the_rerun(store: Path, monkeypatch) -> None:
    out = f"{SCHEME}://p"
    with monkeypatch.context() as m:
        m.setattr(PoolStage, "discard", lambda self: None)  # killed: nothing cleaned up
        with pytest.raises(RuntimeError):
            with PoolWriter(out, pool_schema(has_label=False), file_rows=4) as w:
                w.write(raw_image_batch(np.arange(9), np.zeros((9, 2, 2, 1), np.uint8)))
                raise RuntimeError("killed")
    assert _entries(store / "p") == [INCOMPLETE_MARKER, "part-00000.parquet", "part-00001.parquet"]
    with pytest.raises(DalDistError, match=rf"{SCHEME}://p: incomplete pool: .*{INCOMPLETE_MARKER}.* re-run"):
        validate_pool(out)
    (store / "p" / "NOTES.txt").write_text("mine")
    with pytest.raises(DalDistError, match=r"p: holds an unfinished pool write and other files \(NOTES.txt\)"):
        write_pool(out, np.ones((3, 2, 2, 1), np.uint8))
    (store / "p" / "NOTES.txt").unlink()
    write_pool(out, np.ones((3, 2, 2, 1), np.uint8))
    assert _entries(store / "p") == ["_dal_pool.json", "_rejects.parquet", "part-00000.parquet"]
    assert validate_pool(out).rows == 3
    assert json.loads((store / "p" / "_dal_pool.json").read_text())["rows"] == 3
