"""`dal-dist select` runs the batch-aware strategies; `--beta` and `--keep-probs` reach the library."""

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
    def run(*args: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", ["dal-dist", *args])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code or 0
        cap = capsys.readouterr()
        return SimpleNamespace(returncode=code, stderr=cap.err, stdout=cap.out)
    return run


def test_cli_powerbald_beta_and_labeled(_cli, scores_dir, tmp_path):
    path, ids, _, labeled, _ = scores_dir
    lab = tmp_path / "lab.csv"
    lab.write_text("id\n" + "\n".join(map(str, ids[~labeled][:5])) + "\n")
    out = tmp_path / "p.parquet"
    r = _cli("select", "--scores", str(path), "--strategy", "powerbald", "--by", "bald", "--beta", "3",
             "--seed", "2", "--labeled", str(lab), "--k", "9", "--out", str(out))
    assert r.returncode == 0, r.stderr
    want = select("powerbald", 9, scores=path, by="bald", beta=3.0, seed=2, labeled=lab)
    np.testing.assert_array_equal(pq.read_table(out).column("id").to_numpy(), want.column("id").to_numpy())
    r = _cli("select", "--scores", str(path), "--strategy", "kcenter", "--beta", "3", "--k", "2",
             "--out", str(tmp_path / "x.parquet"))
    assert r.returncode == 2 and r.stderr.startswith("error: beta (--beta) is only used by")
    r = _cli("select", "--scores", str(path), "--strategy", "badge", "--k", "2", "--out", str(tmp_path / "b.parquet"))
    assert r.returncode == 2 and "missing column `probs`" in r.stderr and "--keep-probs" in r.stderr
    assert not (tmp_path / "b.parquet").exists()
    r = _cli("select", "--scores", str(path), "--strategy", "topk", "--by", "bald", "--mc-samples", "3", "--k", "2",
             "--out", str(tmp_path / "t.parquet"))
    assert r.returncode == 2 and r.stderr.startswith("error: mc_samples (--mc-samples) is only used by")
    r = _cli("select", "--scores", str(path), "--strategy", "batchbald", "--k", "2", "--out", str(tmp_path / "bb.parquet"))
    assert r.returncode == 2 and "needs --pool DIR and --checkpoint FILE" in r.stderr


def test_cli_score_has_keep_probs(_cli):
    r = _cli("score", "--help")
    assert r.returncode == 0 and "--keep-probs" in r.stdout
    r = _cli("select", "--help")
    assert r.returncode == 0 and "--beta" in r.stdout and "--clusters" in r.stdout and "--cluster-file" in r.stdout
    assert "--checkpoint" in r.stdout and "--mc-samples" in r.stdout


def test_cli_typiclust_and_density(_cli, scores_dir, tmp_path):
    path = scores_dir[0]
    for args, want in ((["--strategy", "typiclust", "--clusters", "4"], select("typiclust", 6, scores=path,
                                                                                clusters=4, seed=1)),
                       (["--strategy", "density", "--by", "bald", "--beta", "0.5"],
                        select("density", 6, scores=path, by="bald", beta=0.5, seed=1)),
                       (["--strategy", "cluster_margin", "--by", "bald", "--candidates", "30", "--clusters", "3",
                         "--cluster-file", str(tmp_path / "cl.parquet")],
                        select("cluster_margin", 6, scores=path, by="bald", candidates=30, clusters=3, seed=1))):
        out = tmp_path / f"{args[1]}.parquet"
        r = _cli("select", "--scores", str(path), *args, "--seed", "1", "--k", "6", "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert pq.read_table(out).equals(want)
