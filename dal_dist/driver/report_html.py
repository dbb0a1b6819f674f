"""The run report as one self-contained HTML file (`dal-dist report RUN_DIR... --html report.html`).

Everything is inline: charts are SVG drawn here, images are PNG data URIs, styles are one <style> block;
there is no script and no reference outside the file, so it opens offline and reads without JavaScript.
Sections: learning curves per strategy (mean ± sd over seeds), the labels-to-accuracy tables, and per run:
class histograms of each round's picks (class balance drift), grids of the picked images with their scores,
seconds per step, and the run's config. Read from the run directories only (works on running runs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dal_dist.driver.oracle import pick_value_name
from dal_dist.driver.report import Curve, load_curve, strategy_bands, summary_rows
from dal_dist.errors import DalDistError

GENERATOR = "dal-dist report"  # marks a page as ours: only such a file is replaced by a new report
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em;line-height:1.4}
h1{font-size:1.7em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f2f2f2}
figure.round{margin:.8em 0}figure.round figcaption{font-weight:600;margin-bottom:.3em}
.grid{display:flex;flex-wrap:wrap;gap:6px}.pick{width:92px;font-size:11px;text-align:center}
.pick img{width:84px;height:84px;object-fit:contain;image-rendering:pixelated;border:1px solid #ddd;
background:#fff}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:12px}.note{color:#666}
svg text{font-family:system-ui,sans-serif}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


# ------------------------------------------------------------------------------------------ charts (SVG)
def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About n round-numbered ticks covering [lo, hi]."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start, end = np.floor(lo / step + 1e-9) * step, np.ceil(hi / step - 1e-9) * step
    return [float(round(v, 10)) for v in np.arange(start, end + step * 0.5, step)]


@dataclass
class Series:
    """One line of a chart, with an optional ± band."""

    name: str
    x: np.ndarray
    y: np.ndarray
    band: np.ndarray | None = None  # half-width (sd) at each x
    color: str = PALETTE[0]


def line_chart(series: Sequence[Series], x_label: str, y_label: str, title: str,
               width: int = 760, height: int = 420) -> str:
    """An inline SVG line chart: lines with points, shaded ± bands, axes with ticks, a legend."""
    left, right, top, bottom = 64, 180, 36, 52
    pw, ph = width - left - right, height - top - bottom
    xs = np.concatenate([s.x for s in series]) if series else np.array([0.0, 1.0])
    lows = [s.y - (s.band if s.band is not None else 0) for s in series]
    highs = [s.y + (s.band if s.band is not None else 0) for s in series]
    ys = np.concatenate(lows + highs) if series else np.array([0.0, 1.0])
    xt, yt = nice_ticks(float(np.nanmin(xs)), float(np.nanmax(xs))), nice_ticks(float(np.nanmin(ys)),
                                                                                 float(np.nanmax(ys)))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0 or 1) * pw

    def py(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0 or 1) * ph

    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{left + pw / 2}" y="20" text-anchor="middle" font-size="15" font-weight="600">'
           f'{esc(title)}</text>']
    for v in xt:
        out.append(f'<line x1="{px(v):.1f}" y1="{top}" x2="{px(v):.1f}" y2="{top + ph}" stroke="#eee"/>'
                   f'<text x="{px(v):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">{v:g}</text>')
    for v in yt:
        out.append(f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + pw}" y2="{py(v):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="11">{v:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
               f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle" font-size="12">{esc(x_label)}</text>'
               f'<text x="16" y="{top + ph / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 16 {top + ph / 2})">{esc(y_label)}</text>')
    for k, s in enumerate(series):
        ok = np.isfinite(s.y)
        x, y = s.x[ok], s.y[ok]
        if s.band is not None and len(x) > 1:
            b = s.band[ok]
            pts = [(px(a), py(c + d)) for a, c, d in zip(x, y, b)] + \
                  [(px(a), py(c - d)) for a, c, d in zip(x[::-1], y[::-1], b[::-1])]
            out.append(f'<polygon class="band" points="{_points(pts)}" fill="{s.color}" fill-opacity="0.18" '
                       'stroke="none"/>')
        out.append(f'<polyline class="series" points="{_points([(px(a), py(c)) for a, c in zip(x, y)])}" '
                   f'fill="none" stroke="{s.color}" stroke-width="2"><title>{esc(s.name)}</title></polyline>')
        out.extend(f'<circle cx="{px(a):.1f}" cy="{py(c):.1f}" r="2.5" fill="{s.color}"><title>{esc(s.name)}: '
                   f'{a:g} labels, {c:.4f}</title></circle>' for a, c in zip(x, y))
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 32}" y2="{ly}" stroke="{s.color}" '
                   f'stroke-width="3"/><text x="{left + pw + 38}" y="{ly + 4}" font-size="12">{esc(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _points(pts: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)


def stacked_bars(rounds: Sequence[int], counts: np.ndarray, class_names: Sequence[str], title: str,
                 width: int = 760, height: int = 300) -> str:
    """An inline SVG of one stacked bar per round: how many picks of each class the round labeled."""
    left, right, top, bottom = 56, 180, 32, 44
    pw, ph = width - left - right, height - top - bottom
    totals = counts.sum(axis=1) if counts.size else np.zeros(len(rounds))
    yt = nice_ticks(0, float(max(totals.max() if len(totals) else 1, 1)))
    scale = ph / (yt[-1] or 1)
    slot = pw / max(len(rounds), 1)
    bw = min(48.0, slot * 0.7)
    out = [f'<svg class="chart histogram" role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">'
           f'{esc(title)}</text>']
    for v in yt:
        y = top + ph - v * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{v:g}</text>')
    for j, r in enumerate(rounds):
        x = left + slot * j + (slot - bw) / 2
        y = top + ph
        for k, n in enumerate(counts[j]):
            if n <= 0:
                continue
            h = n * scale
            y -= h
            out.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{PALETTE[k % len(PALETTE)]}"><title>round {r}: {esc(class_names[k])} × {int(n)}'
                       '</title></rect>')
        out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 15}" text-anchor="middle" font-size="11">{r}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
               f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" font-size="12">round</text>')
    for k, name in enumerate(list(class_names)[:12]):
        ly = top + 10 + 16 * k
        out.append(f'<rect x="{left + pw + 12}" y="{ly - 9}" width="12" height="12" '
                   f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{left + pw + 30}" y="{ly + 1}" '
                   f'font-size="12">{esc(name)}</text>')
    if len(class_names) > 12:
        out.append(f'<text x="{left + pw + 12}" y="{top + 10 + 16 * 12}" font-size="11">+{len(class_names) - 12} '
                   'more (table below)</text>')
    out.append("</svg>")
    return "".join(out)


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table, every cell escaped."""
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


# ------------------------------------------------------------------------------------- one run's data
@dataclass
class RoundPicks:
    """One round's picks in pick order, the value each was picked by, and the label each received."""

    round: int
    ids: np.ndarray
    score_name: str | None
    scores: list[float | None]
    labels: dict[int, int]  # from the ledger; absent while the round waits for labels


@dataclass
class RunData:
    """What the report shows of one run directory."""

    name: str
    run_dir: Path
    config: dict[str, Any]
    config_hash: str
    status: dict[str, Any]
    curve: Curve | None
    curve_note: str | None
    class_names: list[str]
    rounds: list[RoundPicks] = field(default_factory=list)
    timings: dict[int, dict[str, float]] = field(default_factory=dict)
    pool: Any = None
    image_shape: tuple[int, int, int] | None = None
    pool_note: str | None = None


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> RunData:
    """Read a run directory for the report: config, status, curve, every round's picks, labels and timings."""
    import pyarrow.parquet as pq

    from dal_dist.driver import layout
    from dal_dist.driver.ledger import LabelLedger
    from dal_dist.driver.state import load_run_state, local_run_dir, read_stored_config
    from dal_dist.driver.status import run_status

    path = local_run_dir(run_dir)
    cfg, h = read_stored_config(path)
    try:
        curve, note = load_curve(path, name=name or path.name), None
    except DalDistError as e:
        curve, note = None, str(e)
    data = RunData(name or path.name, path, cfg.model_dump(mode="json"), h, run_status(path), curve, note,
                   [str(k) for k in range(cfg.model.num_classes or 0)])
    try:
        state = load_run_state(path)
        data.class_names, data.pool, data.image_shape = state.class_names, state.pool, state.image_shape
    except (DalDistError, OSError) as e:  # a copied run without its pool: everything but the images
        data.pool_note = f"pool not readable, images left out: {e}"
    ledger = LabelLedger(path).table()
    by_round: dict[int, dict[int, int]] = {}
    for i, lab, r in zip(*(ledger.column(c).to_pylist() for c in ("id", "label", "round"))):
        by_round.setdefault(r, {})[i] = lab
    for rd in sorted((path / "rounds").glob("[0-9][0-9][0-9]")):
        r = int(rd.name)
        t = layout.read_json(rd / layout.TIMINGS_JSON)
        if t:
            data.timings[r] = t
        if (rd / layout.SELECTION_FILE).is_file():
            sel = pq.read_table(rd / layout.SELECTION_FILE)
            col = next((c for c in ("score", "radius") if c in sel.column_names), None)
            scores = sel.column(col).to_pylist() if col else [None] * sel.num_rows
            data.rounds.append(RoundPicks(r, sel.column("id").to_numpy(), col, scores, by_round.get(r, {})))
    if not data.class_names and by_round:
        data.class_names = [str(k) for k in range(max(max(v.values()) for v in by_round.values()) + 1)]
    return data


# ---------------------------------------------------------------------------------------------- sections
def curves_section(curves: Sequence[Curve], targets: Sequence[float]) -> str:
    """Learning curves per strategy (mean ± sd over seeds) and the labels-to-accuracy tables."""
    if not curves:
        return ('<section id="curves"><h2>Learning curves</h2><p class="note">No run has a test accuracy yet.</p>'
                '</section>')
    bands = strategy_bands(curves)
    series = [Series(f"{s} ({n} run{'s' if n > 1 else ''})", g, m, sd if n > 1 else None, PALETTE[k % len(PALETTE)])
              for k, (s, (g, m, sd, n)) in enumerate(bands.items())]
    chart = line_chart(series, "labeled images", "test accuracy", "Test accuracy vs labels (mean ± sd over seeds)")
    head = ["strategy", "runs", *[f"labels to {t:.0%}" for t in targets], "final accuracy (labels)"]
    by_strategy = table(head, [(k, n, *cells, final) for k, n, cells, final in summary_rows(curves, targets)],
                        "summary")
    per_run = table(["run", *head[1:]], [(k, n, *cells, final) for k, n, cells, final
                                         in summary_rows(curves, targets, by_strategy=False)], "summary per-run")
    raw = table(["run", "strategy", "seed", "labels", "test accuracy"],
                [(c.name, c.strategy, c.seed, n, f"{a:.4f}") for c in curves for n, a in zip(c.labels, c.accuracy)],
                "curves")
    return (f'<section id="curves"><h2>Learning curves</h2><figure>{chart}</figure>'
            f'<h2 id="summary">Labels to reach a test accuracy</h2><p>Mean ± sd over the runs of a strategy; a run '
            f'that never reached a target is counted apart.</p>{by_strategy}<h3>Per run</h3>{per_run}'
            f'<details><summary>Every point of every curve</summary>{raw}</details></section>')


def histogram_section(run: RunData) -> str:
    """Per-round class histogram of the labeled picks: a stacked bar chart and its table."""
    rounds = [rp for rp in run.rounds if rp.labels]
    if not rounds:
        return '<h3>Classes of the picks</h3><p class="note">No labeled picks yet.</p>'
    k = max(len(run.class_names), max(max(rp.labels.values()) for rp in rounds) + 1)
    names = list(run.class_names) + [str(j) for j in range(len(run.class_names), k)]
    counts = np.zeros((len(rounds), k), dtype=int)
    for j, rp in enumerate(rounds):
        for lab in rp.labels.values():
            counts[j, lab] += 1
    chart = stacked_bars([rp.round for rp in rounds], counts, names, f"{run.name}: classes of each round's picks")
    rows = [(rp.round, *counts[j].tolist(), int(counts[j].sum())) for j, rp in enumerate(rounds)]
    return (f'<h3>Classes of the picks, per round</h3><figure>{chart}</figure>'
            + table(["round", *names, "total"], rows, "histogram"))


def picks_section(run: RunData, max_per_round: int) -> str:
    """Per round, a grid of the picked images (pick order) with the value each was picked by and its label."""
    from dal_dist.pool import read_images

    if run.pool_note:
        return f'<h3>Picked images</h3><p class="note">{esc(run.pool_note)}</p>'
    parts = ['<h3>Picked images, per round</h3>']
    for rp in run.rounds:
        n = min(len(rp.ids), max_per_round)
        try:
            images = read_images(run.pool, rp.ids[:n], run.image_shape) if n else []
        except (DalDistError, OSError) as e:
            parts.append(f'<p class="note">round {rp.round}: images not readable ({esc(e)})</p>')
            continue
        cells = []
        kind = pick_value_name(run.config["strategy"]["name"], rp.score_name)
        for i, img, score in zip(rp.ids[:n].tolist(), images, rp.scores[:n]):
            lab = rp.labels.get(i)
            label = run.class_names[lab] if lab is not None and lab < len(run.class_names) else \
                ("unlabeled" if lab is None else str(lab))
            value = f"{kind} {score:.4g}" if score is not None else ("initial set" if rp.round == 0 else "random pick")
            cells.append(f'<div class="pick"><img alt="id {i}" src="{png_data_uri(img)}"><br>id {i}<br>'
                         f'{esc(value)}<br><b>{esc(label)}</b></div>')
        more = f" (first {n} of {len(rp.ids)})" if n < len(rp.ids) else ""
        parts.append(f'<figure class="round"><figcaption>round {rp.round}: {len(rp.ids)} picks{more}</figcaption>'
                     f'<div class="grid">{"".join(cells)}</div></figure>')
    return "".join(parts)


def png_data_uri(img: np.ndarray, max_side: int = 128) -> str:
    """A uint8 H×W×C image as an inline PNG (downscaled so the longer side is at most `max_side`)."""
    from PIL import Image

    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img[..., :3])
    pil.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def timings_section(run: RunData) -> str:
    """Seconds per step of every round, and the totals."""
    if not run.timings:
        return '<h3>Timings</h3><p class="note">No step has finished yet.</p>'
    steps = list(dict.fromkeys(s for t in run.timings.values() for s in t))
    rows = [(r, *[f"{t[s]:.1f}" if s in t else "" for s in steps], f"{sum(t.values()):.1f}")
            for r, t in sorted(run.timings.items())]
    rows.append(("total", *[f"{sum(t.get(s, 0) for t in run.timings.values()):.1f}" for s in steps],
                 f"{sum(sum(t.values()) for t in run.timings.values()):.1f}"))
    return '<h3>Seconds per step</h3>' + table(["round", *steps, "round total"], rows, "timings")


def run_section(run: RunData, max_per_round: int) -> str:
    """Everything about one run."""
    st = run.status
    c = run.config
    facts = [("strategy", c["strategy"]["name"]), ("seed", c["seed"]), ("oracle", c["oracle"]),
             ("rounds completed", f"{st['rounds_completed']} / {st['rounds_total']}"), ("labels", st["labels"]),
             ("next", st["next_action"]), ("config hash", run.config_hash[:12])]
    dl = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in facts)
    note = f'<p class="note">{esc(run.curve_note)}</p>' if run.curve_note else ""
    cfg = json.dumps(run.config, indent=2)
    return (f'<section class="run" id="run-{esc(run.name)}"><h2>Run {esc(run.name)}</h2>'
            f'<p class="note">{esc(run.run_dir)}</p><table class="facts"><tbody>{dl}</tbody></table>{note}'
            + histogram_section(run) + picks_section(run, max_per_round) + timings_section(run)
            + f'<h3>Config</h3><details open><summary>config.json of {esc(run.name)}</summary><pre>{esc(cfg)}</pre>'
              '</details></section>')


def render_html(runs: Sequence[RunData], targets: Sequence[float] = (0.90, 0.95), max_per_round: int = 24) -> str:
    """The whole report page."""
    curves = [r.curve for r in runs if r.curve is not None]
    toc = "".join(f'<li><a href="#run-{esc(r.name)}">{esc(r.name)}</a></li>' for r in runs)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{GENERATOR}">'
            f'<title>dal-dist report</title><style>{_STYLE}</style></head><body>'
            f'<h1>dal-dist report</h1><p class="note">{len(runs)} run(s), generated {esc(now)}.</p>'
            f'<nav><ul><li><a href="#curves">Learning curves</a></li><li><a href="#summary">Labels to reach a test '
            f'accuracy</a></li>{toc}</ul></nav>'
            + curves_section(curves, targets) + "".join(run_section(r, max_per_round) for r in runs)
            + "</body></html>\n")


def check_html_out(out: str | os.PathLike, flag: str = "out") -> Path:
    """The report's path, refused before any work when writing it would lose something: a directory, a missing
    folder, or an existing file that is not an earlier dal-dist report (that one is replaced)."""
    path = Path(out)
    if not str(out).strip():
        raise DalDistError(f"{flag}: empty value; expected the path of the HTML file to write")
    if path.is_dir():
        raise DalDistError(f"{flag} {path}: is a directory; expected the path of the HTML file to write")
    if not path.parent.is_dir():
        raise DalDistError(f"{flag} {path}: folder {path.parent} does not exist")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError as e:
            raise DalDistError(f"{flag} {path}: cannot read the existing file ({e})") from e
        if f'<meta name="generator" content="{GENERATOR}">'.encode() not in head:
            raise DalDistError(f"{flag} {path}: exists and is not a dal-dist report; choose another path (an "
                               "earlier report page is replaced, any other file is kept)")
    return path


def write_html_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                      targets: Sequence[float] = (0.90, 0.95), max_per_round: int = 24) -> Path:
    """Render the report of `run_dirs` into one self-contained HTML file (written atomically; an existing file
    is replaced only when it is an earlier dal-dist report)."""
    from dal_dist.atomic import write_bytes_atomic

    out = check_html_out(out)
    names = [Path(d).name for d in run_dirs]
    runs = [load_run(d, name=n if names.count(n) == 1 else f"{n}-{k}") for k, (d, n) in enumerate(zip(run_dirs, names))]
    write_bytes_atomic(out, render_html(runs, targets, max_per_round).encode("utf-8"))
    return out
