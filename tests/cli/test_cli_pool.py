"""`dal-dist pool` commands end to end through the Typer app (same code path as the console script)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import dal_dist.cli.pool  # noqa: F401  (registers `pool` on the root app)
from dal_dist.cli.main import app

runner = CliRunner()


def test_pool_ingest_npz_then_info_json(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 1, 0, 2, 1]))
    res = runner.invoke(app, ["pool", "ingest", "--format", "npz", "--file", str(tmp_path / "d.npz"),
                              "--out", str(tmp_path / "pool")])
    assert res.exit_code == 0, res.output
    assert "ingested: 5 rows in 1 file(s)" in res.output and "0 rejected" in res.output
    res = runner.invoke(app, ["pool", "info", str(tmp_path / "pool"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["rows"] == 5 and info["label_counts"] == {"0": 1, "1": 3, "2": 1}
    assert info["image_shape"] == {"height": 4, "width": 4, "channels": 1} and info["files"] == 1
    assert info["schema"]["image"] == "binary" and info["bytes"] > 0
    res = runner.invoke(app, ["pool", "info", str(tmp_path / "pool")])
    assert res.exit_code == 0 and "rows:        5" in res.output


def test_pool_synth_and_missing_option(tmp_path: Path) -> None:
    res = runner.invoke(app, ["pool", "synth", "--n", "100", "--out", str(tmp_path / "s"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "synthesised: 100 rows" in res.output
    res = runner.invoke(app, ["pool", "ingest", "--format", "image-folder", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "needs --root DIR" in str(res.exception)
