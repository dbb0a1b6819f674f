"""`dal-dist select` is a thin wrapper: it writes the library's selection and reports bad input as `error:`."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.cli import main
from dal_dist.selection import select


@pytest.fixture
def _cli(monkeypatch, capsys):
    """Run `dal-dist ARGS` in-process through the real entry point (exit code + stderr)."""
    def run(*args: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", ["dal-dist", *args])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code or 0
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    return run


def test_cli_select_writes_the_library_selection(_cli, scores_dir, tmp_path):
    path = scores_dir[0]
    out = tmp_path / "sel.parquet"
    r = _cli("select", "--scores", str(path), "--strategy", "kcenter", "--k", "12", "--out", str(out))
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out)
    assert got.column_names == ["id", "radius"]
    np.testing.assert_array_equal(got.column("id").to_numpy(), select("kcenter", 12, scores=path).column("id").to_numpy())
    r = _cli("select", "--scores", str(path), "--strategy", "kcenter", "--k", "0", "--out", str(tmp_path / "k0.parquet"))
    assert r.returncode == 2 and r.stderr.startswith("error: k = 0")
    assert not (tmp_path / "k0.parquet").exists()
    r = _cli("select", "--scores", str(path), "--strategy", "kcenter", "--k", "12", "--out", str(out))
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr  # never replaced silently
