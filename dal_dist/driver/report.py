"""Reports over run directories: learning curves (PNG + CSV), labels-to-accuracy table, selection grids
(the same, with class histograms, timings and configs, as one HTML page: `dal_dist.driver.report_html`).

Everything is read from the run directories the driver wrote (`run_status` curves, the ledger and the
pool), so a report can be made while runs are still going and from copies of finished runs.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dal_dist.errors import DalDistError


@dataclass
class Curve:
    """Test accuracy after each round of one run."""

    name: str
    strategy: str
    seed: int
    labels: list[int]
    accuracy: list[float]

    def labels_to_reach(self, target: float) -> int | None:
        """Fewest labels at which test accuracy first reaches `target` (None if it never does)."""
        for n, a in zip(self.labels, self.accuracy):
            if a >= target:
                return n
        return None


def load_curve(run_dir: str | os.PathLike, name: str | None = None) -> Curve:
    """A run's learning curve from its per-round metrics (rounds without a test accuracy are skipped)."""
    from dal_dist.driver.state import local_run_dir, read_stored_config
    from dal_dist.driver.status import run_status

    status = run_status(run_dir)
    cfg, _ = read_stored_config(local_run_dir(run_dir))
    pts = sorted((int(p["labels"]), float(p["test_accuracy"])) for p in status["curve"]
                 if p.get("test_accuracy") is not None and p.get("labels") is not None)
    if not pts:
        raise DalDistError(f"{run_dir}: no round with a test accuracy yet (does the run have a test_pool?)")
    return Curve(name or Path(run_dir).name, cfg.strategy.name, cfg.seed, [p[0] for p in pts], [p[1] for p in pts])


def write_curves_csv(curves: Sequence[Curve], path: str | os.PathLike) -> None:
    """Raw curves as `strategy,seed,labels,test_accuracy` rows (the format of results/gal2017)."""
    from dal_dist.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "seed", "labels", "test_accuracy"])
        for c in curves:
            for n, a in zip(c.labels, c.accuracy):
                w.writerow([c.strategy, c.seed, n, f"{a:.6f}"])


def read_curves_csv(path: str | os.PathLike) -> list[Curve]:
    """Inverse of `write_curves_csv`: one Curve per (strategy, seed)."""
    rows: dict[tuple[str, int], list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault((row["strategy"], int(row["seed"])), []).append(
                (int(row["labels"]), float(row["test_accuracy"])))
    return [Curve(f"{s}-seed{seed}", s, seed, [p[0] for p in sorted(v)], [p[1] for p in sorted(v)])
            for (s, seed), v in sorted(rows.items())]


def summary_rows(curves: Sequence[Curve], targets: Sequence[float] = (0.90, 0.95),
                 by_strategy: bool = True) -> list[tuple[str, int, list[str], str]]:
    """(strategy or run, runs, one cell per target, final accuracy (labels)): labels needed to first reach each
    test accuracy, mean ± sd over the runs of a group, with how many runs reached it."""
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        groups.setdefault(c.strategy if by_strategy else c.name, []).append(c)
    rows = []
    for key, cs in groups.items():
        cells = []
        for t in targets:
            reached = [c.labels_to_reach(t) for c in cs]
            ok = [r for r in reached if r is not None]
            if not ok:
                cells.append(f"> {max(c.labels[-1] for c in cs)} (not reached)")
            else:
                note = "" if len(ok) == len(cs) else f" ({len(ok)}/{len(cs)} runs reached it)"
                cells.append(f"{np.mean(ok):.0f}{' ± %.0f' % np.std(ok) if len(ok) > 1 else ''}{note}")
        final = np.mean([c.accuracy[-1] for c in cs])
        rows.append((key, len(cs), cells, f"{final:.4f} ({int(np.mean([c.labels[-1] for c in cs]))})"))
    return rows


def summary_table(curves: Sequence[Curve], targets: Sequence[float] = (0.90, 0.95),
                  by_strategy: bool = True) -> str:
    """Markdown: labels needed to first reach each test accuracy (mean over seeds per strategy)."""
    head = (f"| {'strategy' if by_strategy else 'run'} | runs | " + " | ".join(f"labels to {t:.0%}" for t in targets)
            + " | final accuracy (labels) |")
    lines = [head, "|" + "---|" * (3 + len(targets))]
    for key, n, cells, final in summary_rows(curves, targets, by_strategy):
        lines.append(f"| {key} | {n} | " + " | ".join(cells) + f" | {final} |")
    return "\n".join(lines) + "\n"


def strategy_bands(curves: Sequence[Curve]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """strategy → (labels grid, mean, sd over seeds, runs): each run's accuracy at the grid points it reached
    (runs of one protocol share the grid), NaN past a run's last round, so a stopped run drops out there."""
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        groups.setdefault(c.strategy, []).append(c)
    out = {}
    for strategy, cs in groups.items():
        grid = np.array(sorted(set().union(*[c.labels for c in cs])), dtype=float)
        mat = np.array([[np.interp(n, c.labels, c.accuracy, right=np.nan) for n in grid] for c in cs])
        with np.errstate(invalid="ignore"):
            out[strategy] = (grid, np.nanmean(mat, axis=0), np.nanstd(mat, axis=0), len(cs))
    return out


def plot_curves(curves: Sequence[Curve], path: str | os.PathLike, title: str = "Test accuracy vs labels") -> None:
    """One PNG: mean curve per strategy (shaded min–max over seeds), runs overlaid when alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dal_dist.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        groups.setdefault(c.strategy, []).append(c)
    for strategy, cs in groups.items():
        grid = sorted(set().union(*[c.labels for c in cs]))
        # Each run's accuracy at the grid points it reached (runs share the protocol, so grids agree).
        mat = np.array([[np.interp(n, c.labels, c.accuracy, right=np.nan) for n in grid] for c in cs])
        mean = np.nanmean(mat, axis=0)
        line, = ax.plot(grid, mean, label=f"{strategy} ({len(cs)} run{'s' if len(cs) > 1 else ''})")
        if len(cs) > 1:
            ax.fill_between(grid, np.nanmin(mat, axis=0), np.nanmax(mat, axis=0), alpha=0.15,
                            color=line.get_color())
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def selection_grid(run_dir: str | os.PathLike, out: str | os.PathLike, max_per_round: int = 20,
                   scale: int = 2) -> Path:
    """A PNG grid: one row per round, that round's selected images with the label each received."""
    from PIL import Image, ImageDraw

    from dal_dist.driver.ledger import LabelLedger
    from dal_dist.driver.state import load_run_state
    from dal_dist.pool import read_images

    state = load_run_state(run_dir)
    ledger = LabelLedger(run_dir).table()
    if ledger.num_rows == 0:
        raise DalDistError(f"{run_dir}: no labels yet, nothing to show")
    rounds = ledger.column("round").to_numpy()
    ids_all = ledger.column("id").to_numpy()
    labels_all = ledger.column("label").to_numpy()
    rows = []
    for r in sorted(set(rounds.tolist())):
        sel = np.flatnonzero(rounds == r)[:max_per_round]
        # A pool of mixed sizes is shown as 96-px centre crops (the photo transform), never stacked unequal.
        imgs = (read_images(state.pool, ids_all[sel], None) if state.image_shape is not None
                else read_images(state.pool, ids_all[sel], (96, 96, 3), photo=True))
        rows.append((r, imgs, labels_all[sel]))
    h, w = rows[0][1].shape[1:3]
    cell_w, cell_h, left = w * scale + 4, h * scale + 14, 70
    canvas = Image.new("RGB", (left + cell_w * max_per_round, cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (r, imgs, labels) in enumerate(rows):
        draw.text((4, i * cell_h + cell_h // 2 - 6), f"round {r}", fill="black")
        for j, (img, lab) in enumerate(zip(imgs, labels)):
            mode = "L" if img.shape[2] == 1 else "RGB"
            tile = Image.fromarray(img[..., 0] if mode == "L" else img[..., :3], mode).convert("RGB")
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            x, y = left + j * cell_w, i * cell_h
            canvas.paste(tile, (x, y))
            draw.text((x + 2, y + h * scale), str(int(lab)), fill="black")
    from dal_dist.atomic import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out


def make_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                targets: Sequence[float] = (0.90, 0.95)) -> dict[str, str]:
    """Curves PNG + CSV, the markdown summary and one selection grid per run, written under `out`."""
    out = Path(out)
    curves = [load_curve(d, name=f"{Path(d).name}") for d in run_dirs]  # every run read before `out` is made
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "learning_curves.png")
    write_curves_csv(curves, out / "curves.csv")
    table = summary_table(curves, targets, by_strategy=True)
    per_run = summary_table(curves, targets, by_strategy=False)
    from dal_dist.atomic import write_bytes_atomic

    md = ("# dal-dist report\n\n## Labels to reach a test accuracy (mean ± std over runs of a strategy)\n\n"
          + table + "\n## Per run\n\n" + per_run + "\n![learning curves](learning_curves.png)\n")
    grids = {}
    for d in run_dirs:
        g = selection_grid(d, out / f"selections-{Path(d).name}.png")
        grids[str(d)] = str(g)
        md += f"\n### Selected images: {Path(d).name}\n\n![{Path(d).name}]({g.name})\n"
    write_bytes_atomic(out / "summary.md", md.encode())
    return {"plot": str(out / "learning_curves.png"), "summary": str(out / "summary.md"),
            "curves": str(out / "curves.csv"), **{f"grid:{k}": v for k, v in grids.items()}}
