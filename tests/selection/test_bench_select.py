"""`dal-dist bench select`: one JSON line per strategy with its time and peak RSS."""

from __future__ import annotations

import json

import pytest

from dal_dist.benchmarks.select import main, main_sharded


def test_bench_select_prints_one_line_per_strategy(capsys):
    lines = main(("powerbald", "badge"), n=2000, k=5, dim=8, classes=3)
    printed = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert printed == lines and [x["strategy"] for x in lines] == ["powerbald", "badge"]
    for x in lines:
        assert "error" not in x, x
        assert x["seconds"] >= 0 and x["peak_rss_bytes"] > x["input_bytes"] > 0


@pytest.mark.slow  # two child processes and a Ray start: 16 s; the picks' equality is tested in test_*_sharded.py
def test_bench_select_sharded_compares_to_one_node_in_the_same_run(capsys):
    lines = main_sharded(("badge",), n=600, k=6, dim=4, classes=3, workers=2, files=3)
    assert [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()] == lines
    for x in lines:
        assert x["bench"] == "select-sharded" and x["same_picks"] is True, x
        assert x["single_node_s"] > 0 and x["sharded_s"] > 0 and x["speedup"] > 0
        assert x["single_node_peak_rss_bytes"] > x["input_bytes"] > 0 and x["sharded_driver_peak_rss_bytes"] > 0
