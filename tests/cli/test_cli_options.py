"""Every option of every `dal-dist` command, walked with values that must be refused (issue 16, "Done when").

The walk is generated from the Typer app itself: each command's parameters, their Python types
(int/float: negative, zero, huge, not a number, empty; paths: missing, the wrong kind of entry, empty;
words: unknown, empty) plus a few values named per option (`--mc-samples 1`, `--dropout 1.5`, ...).
Each case runs one command with every other option valid (tiny fixtures: a pool, a checkpoint, a scores
dataset, a human-oracle run waiting for labels) and one option bad, and must end with exit status 2,
exactly one line on stderr (`error: ...`, naming the option or the bad value), no traceback, and the
whole test directory (inputs included) unchanged: names, sizes and mtimes.

The cases run in this process through `dal_dist.cli.main.main()` (no 1-2 s of imports each), with
`ray.init` replaced by a trap: a value that slips past validation fails the case instead of starting a
cluster. A handful also run as real `python -m dal_dist` processes to prove the entry point behaves
the same. Values that are legitimately accepted are listed in ACCEPTED with the reason.
"""

from __future__ import annotations

import enum
import inspect
import os
import re
import shutil
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer

from dal_dist.cli.main import app, main

HUGE = str(10**12)

# ------------------------------------------------------------------------------------------ commands
# One valid invocation per command (and per mode where an option matters only in that mode). `{name}`
# is a fixture path (see `walk_dir`); keys starting with "--" are options (None: a flag), others are
# positional arguments, by parameter name.
BASES: dict[str, dict[str, str | None]] = {
    "pool ingest": {"--format": "npz", "--file": "{npz}", "--out": "{new}"},
    "pool ingest/mnist-idx": {"--format": "mnist-idx", "--images": "{idx_images}", "--labels": "{idx_labels}",
                              "--out": "{new}"},
    "pool ingest/image-folder": {"--format": "image-folder", "--root": "{folder}", "--out": "{new}"},
    "pool synth": {"--n": "16", "--out": "{new}", "--chunk-size": "1024"},
    "pool info": {"path": "{pool}"},
    "model init": {"--model": "mnist-cnn", "--classes": "4", "--out": "{new}.pt"},
    "score": {"--pool": "{pool}", "--checkpoint": "{ckpt}", "--out": "{new}", "--mc-samples": "2"},
    "embed": {"--pool": "{pool}", "--model": "mnist-cnn", "--out": "{new}"},
    "embed/checkpoint": {"--pool": "{pool}", "--checkpoint": "{ckpt}", "--out": "{new}"},
    "select": {"--strategy": "topk", "--by": "bald", "--k": "2", "--scores": "{scores}", "--out": "{new}.parquet"},
    "select/hybrid": {"--strategy": "hybrid", "--by": "bald", "--candidates": "8", "--k": "2",
                      "--scores": "{scores}", "--out": "{new}.parquet"},
    "select/kcenter-init": {"--strategy": "kcenter-init", "--k": "2", "--pool": "{pool}", "--out": "{new}.parquet"},
    "select/distributed": {"--strategy": "kcenter", "--k": "2", "--scores": "{scores}", "--distributed": None,
                           "--workers": "1", "--out": "{new}.parquet"},
    "select/powerbald": {"--strategy": "powerbald", "--by": "bald", "--k": "2", "--scores": "{scores}",
                         "--out": "{new}.parquet"},
    "select/typiclust": {"--strategy": "typiclust", "--k": "2", "--scores": "{scores}", "--out": "{new}.parquet"},
    "select/cluster_margin": {"--strategy": "cluster_margin", "--by": "bald", "--k": "2", "--scores": "{scores}",
                              "--cluster-file": "{new}-clusters.parquet", "--out": "{new}.parquet"},
    "select/batchbald": {"--strategy": "batchbald", "--k": "2", "--candidates": "4", "--mc-samples": "2",
                         "--scores": "{scores}", "--pool": "{pool}", "--checkpoint": "{ckpt}", "--out": "{new}.parquet"},
    "stream": {"--source": "{source}", "--checkpoint": "{ckpt}", "--out": "{new}", "--budget": "2",
               "--expected": "100", "--idle-timeout": "0", "--poll-seconds": "0.1"},
    "stream/rate": {"--source": "{source}", "--checkpoint": "{ckpt}", "--out": "{new}", "--budget": "2",
                    "--rate": "0.1", "--idle-timeout": "0", "--poll-seconds": "0.1"},
    "run": {"--config": "{run_yaml}", "--run-dir": "{new}"},
    "run/resume": {"--resume": "{run}"},
    "status": {"run_dir": "{run}"},
    "labels import": {"file": "{labels_csv}", "--run-dir": "{run}"},
    "report": {"run_dirs": "{run}", "--out": "{new}"},
    "bench scoring": {"--model": "mnist-cnn", "--image-size": "28", "--n": "8", "--mc-samples": "2",
                      "--batch-size": "8", "--pipeline-n": "8", "--repeats": "1", "--no-pipeline": None},
    "bench kcenter": {"--n": "64", "--dim": "4", "--labeled": "2", "--k": "2", "--ref-picks": "0"},
    "bench kcenter/sharded": {"--n": "64", "--dim": "4", "--labeled": "2", "--k": "2", "--ref-picks": "0",
                              "--sharded-workers": "1"},
    "bench soak": {"--rounds": "1", "--pool": "64", "--workers": "1"},
    "bench select": {"--n": "64", "--k": "2", "--dim": "4", "--classes": "3", "--strategy": "topk"},
    "bench select/sharded": {"--n": "64", "--k": "2", "--dim": "4", "--classes": "3", "--strategy": "badge",
                             "--distributed": "1"},
    "bench round": {"--n": "64", "--dim": "4", "--labeled": "8", "--k": "2", "--mc-samples": "2"},
}
# The mode in which an option is used (an option the base command ignores would prove nothing).
BASE_OF = {
    ("pool ingest", "--images"): "mnist-idx", ("pool ingest", "--labels"): "mnist-idx",
    ("pool ingest", "--root"): "image-folder", ("pool ingest", "--workers"): "image-folder",
    ("select", "--candidates"): "hybrid", ("select", "--storage-dtype"): "hybrid", ("select", "--device"): "hybrid",
    ("select", "--pool"): "kcenter-init", ("select", "--workers"): "distributed",
    ("select", "--beta"): "powerbald", ("select", "--clusters"): "typiclust",
    ("select", "--cluster-file"): "cluster_margin", ("select", "--checkpoint"): "batchbald",
    ("select", "--mc-samples"): "batchbald",
    ("stream", "--rate"): "rate",
    ("run", "--resume"): "resume",
    ("bench kcenter", "--sharded-workers"): "sharded",
    ("bench select", "--distributed"): "sharded",
    ("embed", "--checkpoint"): "checkpoint",
}

# What a str/Path value names (the Python type alone does not say); anything else of type str is a word.
PATH_KINDS = {
    "in_file": {("pool ingest", "--images"), ("pool ingest", "--labels"), ("pool ingest", "--file"),
                ("score", "--checkpoint"), ("score", "--labeled"), ("select", "--labeled"),
                ("stream", "--checkpoint"), ("run", "--config"), ("labels import", "file"),
                ("model init", "--weights"), ("select", "--checkpoint"), ("embed", "--weights"),
                ("embed", "--checkpoint")},
    "in_dir": {("pool ingest", "--root"), ("pool info", "path"), ("score", "--pool"), ("select", "--scores"),
               ("select", "--pool"), ("stream", "--source"), ("run", "--resume"), ("status", "run_dir"),
               ("labels import", "--run-dir"), ("report", "run_dirs"), ("embed", "--pool")},
    "out_file": {("model init", "--out"), ("select", "--out"), ("report", "--html"), ("select", "--cluster-file")},
    "out_dir": {("pool ingest", "--out"), ("pool synth", "--out"), ("score", "--out"), ("stream", "--out"),
                ("run", "--run-dir"), ("report", "--out"), ("embed", "--out")},
}
# Options whose value the walk does not vary, and why.
NOT_WALKED = {
    ("score", "--address"): "a Ray address is checked by connecting to it, which is the command's work",
    ("select", "--address"): "a Ray address is checked by connecting to it, which is the command's work",
    ("embed", "--address"): "a Ray address is checked by connecting to it, which is the command's work",
}

BAD_BY_KIND = {
    "int": ["-1", "0", HUGE, "abc", ""],
    "float": ["-1", "0", HUGE, "abc", ""],
    "word": ["bogus", ""],
    "in_file": ["{missing}", "{a_dir}", ""],
    "in_dir": ["{missing}", "{a_file}", ""],
    "out_file": ["{a_dir}", "{a_file}", ""],
    "out_dir": ["{a_file}", "{pool}", ""],
}
# Values refused by one option only (beyond its kind's).
EXTRA_BAD = {
    ("pool synth", "--chunk-size"): ["1000"],
    ("pool info", "path"): ["{a_dir}"],
    ("model init", "--classes"): ["1"],
    ("model init", "--dropout"): ["1.5"],
    ("score", "--mc-samples"): ["1"],
    ("score", "--acquisition"): ["bald,bogus"],
    ("score", "--gpus-per-worker"): ["1.5"],
    ("embed", "--gpus-per-worker"): ["1.5"],
    ("select", "--by"): ["embedding", "id", "labeled"],
    ("select", "--scores"): ["{pool}", "{a_dir}"],
    ("select", "--pool"): ["{scores}", "{a_dir}"],
    ("select", "--out"): ["{scores}", "{pool}/sel.parquet"],
    ("select", "--device"): ["cuda"],  # without a GPU (skipped where one is present)
    ("select", "--mc-samples"): ["1"],
    ("stream", "--mc-samples"): ["1"],
    ("stream", "--rate"): ["1.5"],
    ("stream", "--acquisition"): ["bald,entropy"],
    ("stream", "--device"): ["cuda"],
    ("run", "--resume"): ["{a_dir}"],
    ("status", "run_dir"): ["{a_dir}"],
    ("labels import", "--run-dir"): ["{a_dir}"],
    ("report", "--targets"): ["abc", "", "1.5", "0", "-1", "0.9,x"],
    ("report", "run_dirs"): ["{a_dir}"],
    ("bench scoring", "--mc-samples"): ["1"],
    ("bench scoring", "--source"): ["png", "RAW"],
    ("bench scoring", "--decode"): ["gpu", "AUTO"],
    ("score", "--decode"): ["gpu", "nvjpeg", "AUTO"],
    ("bench soak", "--kill-prob"): ["1.5"],
}
# Generated values that are valid for one option, with the reason. The walk skips them.
ACCEPTED = {
    **{(cmd, "--seed", v): "a seed is any non-negative integer" for cmd in
       ("pool synth", "model init", "score", "select", "stream", "bench scoring", "bench kcenter", "bench soak",
        "bench select", "bench round")
       for v in ("0", HUGE)},
    ("model init", "--dropout", "0"): "dropout 0 is a deterministic head (ModelConfig allows [0, 1))",
    ("score", "--gpus-per-worker", "0"): "0 forces CPU actors",
    ("score", "--cpus-per-worker", "0"): "an actor may reserve no CPU (Ray allows num_cpus=0)",
    ("embed", "--gpus-per-worker", "0"): "0 forces CPU actors",
    ("embed", "--cpus-per-worker", "0"): "an actor may reserve no CPU (Ray allows num_cpus=0)",
    ("stream", "--budget", "0"): "a zero budget is a stream that labels nothing",
    ("stream", "--budget", HUGE): "a budget above the stream length labels every item",
    ("stream", "--expected", HUGE): "a long stream is any length",
    ("stream", "--idle-timeout", "0"): "stop as soon as no new file arrives",
    ("stream", "--idle-timeout", HUGE): "follow a quiet directory for a long time",
    ("stream", "--warmup", "0"): "decide from the first item",
    ("stream", "--slack", "0"): "follow the even schedule exactly",
    **{("stream", flag, HUGE): "beyond the stream's length it changes the quantile, not the budget: the "
                               "calibrator's catch-up and behind rules still spend it on schedule"
       for flag in ("--window", "--warmup", "--slack")},
    ("bench kcenter", "--labeled", "0"): "no existing centers",
    ("bench kcenter", "--ref-picks", "0"): "0 skips the scikit-learn reference (documented)",
    ("bench kcenter", "--sharded-workers", "0"): "0 runs the single-node benchmark (documented)",
    ("bench soak", "--kill-prob", "0"): "rounds without kills",
    ("report", "--out", "{pool}"): "report files are added to an existing directory",
    ("select", "--beta", "0"): "beta 0 is uniform sampling (Kirsch et al. 2023)",
    ("select", "--beta", HUGE): "a large beta approaches top-k (inf is top-k exactly)",
    ("select", "--clusters", HUGE): "typiclust's clusters is a cap: min(|L| + k, clusters, N) are made",
}

# Cases the walk found that are not fixed yet (strict: a fix makes the case pass and this entry must go).
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}  # (command, option, value) -> why it is not refused yet


# ------------------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class Param:
    """One parameter of one command: its flag (or positional name), Python type and kind of value."""

    command: str
    name: str  # "--flag" or the positional parameter's name
    python_name: str
    kind: str  # int, float, word, in_file, ..., flag


def _base_type(annotation: typing.Any) -> typing.Any:
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if typing.get_origin(annotation) is list:
        return _base_type(typing.get_args(annotation)[0])
    return annotation


def _kind(command: str, name: str, annotation: typing.Any) -> str:
    t = _base_type(annotation)
    if t is bool:
        return "flag"
    if t is int:
        return "int"
    if t is float:
        return "float"
    for kind, members in PATH_KINDS.items():
        if (command, name) in members:
            return kind
    if isinstance(t, type) and issubclass(t, enum.Enum) or t is str:
        return "word"
    raise AssertionError(f"{command} {name}: no bad values known for type {annotation!r}; extend the walk")


def _typer_params() -> list[Param]:
    """Every parameter of every command, from the Typer app's registered callbacks."""
    out: list[Param] = []

    def walk(t: typer.Typer, prefix: str) -> None:
        for ci in t.registered_commands:
            command = (prefix + " " + (ci.name or ci.callback.__name__.replace("_", "-"))).strip()
            hints = typing.get_type_hints(ci.callback)
            for pname, p in inspect.signature(ci.callback).parameters.items():
                info = p.default
                decls = getattr(info, "param_decls", None)
                if isinstance(info, typer.models.OptionInfo):
                    name = next(d for d in (decls or ()) if d.startswith("--")).split("/")[0]
                else:
                    name = pname
                out.append(Param(command, name, pname, _kind(command, name, hints[pname])))
        for gi in t.registered_groups:
            walk(gi.typer_instance, (prefix + " " + gi.name).strip())

    walk(app, "")
    return out


def _click_params() -> set[tuple[str, str]]:
    """(command, flag or argument name) as Click sees the app: the walk must cover each of them."""
    found: set[tuple[str, str]] = set()

    def walk(cmd: typing.Any, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (path + " " + name).strip())
            return
        for p in cmd.params:
            longs = [o for o in p.opts if o.startswith("--")]
            found.add((path, longs[0] if longs and type(p).__name__.endswith("Option") else p.name))

    walk(typer.main.get_command(app), "")
    return found


PARAMS = _typer_params()


@dataclass(frozen=True)
class Case:
    command: str
    option: str
    value: str
    base: str

    @property
    def id(self) -> str:
        return f"{self.command} {self.option}={self.value!r}"


def _cases() -> list[Case]:
    cases = []
    for p in PARAMS:
        if p.kind == "flag" or (p.command, p.name) in NOT_WALKED:
            continue
        values = BAD_BY_KIND[p.kind] + [v for v in EXTRA_BAD.get((p.command, p.name), [])
                                         if v not in BAD_BY_KIND[p.kind]]
        mode = BASE_OF.get((p.command, p.name))
        base = f"{p.command}/{mode}" if mode else p.command
        for v in values:
            if (p.command, p.name, v) not in ACCEPTED:
                cases.append(Case(p.command, p.name, v, base))
    return cases


CASES = _cases()


def test_the_walk_covers_every_command_and_option() -> None:
    """Click's view of the app (what a user can type) = the walk's view; every option varied or excused."""
    typer_view = {(p.command, p.name) for p in PARAMS}
    assert _click_params() == typer_view
    walked = {(c.command, c.option) for c in CASES}
    flags = {(p.command, p.name) for p in PARAMS if p.kind == "flag"}
    assert typer_view - walked - flags == set(NOT_WALKED)
    assert {b.split("/")[0] for b in BASES} == {p.command for p in PARAMS}
    assert all((c, o) in typer_view for (c, o, _v) in ACCEPTED), "an ACCEPTED entry names no option"
    assert set(KNOWN_GAPS) <= {(c.command, c.option, c.value) for c in CASES}, "a KNOWN_GAPS entry names no case"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def walk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test directory with valid tiny inputs in `in/` (the walk's cases may only read them)."""
    from PIL import Image

    from dal_dist.driver import load_config
    from dal_dist.driver import run as run_driver
    from dal_dist.models import build_model, default_config, save_checkpoint
    from dal_dist.pool import write_pool
    from dal_dist.scoring import score_pool

    root = tmp_path_factory.mktemp("walk")
    inp = root / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(24, 28, 28, 1), dtype=np.uint8)
    y = np.arange(24) % 4
    write_pool(inp / "pool", x, y)
    save_checkpoint(build_model(default_config("mnist-cnn", 4)), inp / "model.pt")
    score_pool(inp / "pool", inp / "model.pt", inp / "scores", acquisitions="bald,entropy", mc_samples=2,
               executor="local", progress=False)
    np.savez(inp / "d.npz", x=x[:4, :, :, 0], y=y[:4])
    (inp / "images.idx").write_bytes(np.array([0x803, 4, 28, 28], ">u4").tobytes() + x[:4].tobytes())
    (inp / "labels.idx").write_bytes(np.array([0x801, 4], ">u4").tobytes() + y[:4].astype(np.uint8).tobytes())
    for c in range(2):
        (inp / "folder" / str(c)).mkdir(parents=True)
        Image.fromarray(x[c, :, :, 0]).save(inp / "folder" / str(c) / "a.png")
    (inp / "source").mkdir()
    (inp / "empty").mkdir()
    (inp / "notes.txt").write_text("not a dataset\n")
    (inp / "run.yaml").write_text(f"pool: {inp / 'pool'}\nstrategy: {{name: bald, mc_samples: 2}}\n"
                                  "initial: {kind: random, size: 4}\nbudget: 2\nrounds: 1\noracle: human\n"
                                  "executor: local\n")
    outcome = run_driver(load_config(inp / "run.yaml"), inp / "run")
    assert outcome.status == "waiting_for_labels"
    picked = (inp / "run" / "rounds" / "000" / "to_label" / "to_label.csv").read_text().splitlines()[1:]
    (inp / "labels.csv").write_text("id,label\n" + "".join(f"{row.split(',')[0]},0\n" for row in picked))
    return root


def _paths(root: Path) -> dict[str, str]:
    inp = root / "in"
    return {"new": str(root / "new"), "missing": str(root / "missing" / "thing"), "a_dir": str(inp / "empty"),
            "a_file": str(inp / "notes.txt"), "pool": str(inp / "pool"), "ckpt": str(inp / "model.pt"),
            "scores": str(inp / "scores"), "npz": str(inp / "d.npz"), "idx_images": str(inp / "images.idx"),
            "idx_labels": str(inp / "labels.idx"), "folder": str(inp / "folder"), "source": str(inp / "source"),
            "run": str(inp / "run"), "run_yaml": str(inp / "run.yaml"), "labels_csv": str(inp / "labels.csv")}


def argv(case: Case, root: Path) -> list[str]:
    """The command line of a case: the base invocation with `case.option` set to `case.value`."""
    paths = _paths(root)
    args = dict(BASES[case.base])
    args[case.option] = case.value
    out = case.command.split()
    for key, value in args.items():
        if key.startswith("--"):
            out.append(key)
        if value is not None:
            out.append(value.format(**paths))
    return out


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root: (size, mtime in ns) by relative path (directories too: their mtime moves
    when an entry is created or removed in them)."""
    found = {".": (0, root.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            found[str(p.relative_to(root))] = (st.st_size if name in filenames else 0, st.st_mtime_ns)
    return found


class ReachedRay(BaseException):
    """Raised by the trapped `ray.init`: the case passed validation and went on to start Ray."""


def run_in_process(args: list[str], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[int, str]:
    """(exit status, stderr) of `dal-dist ARGS` run through `main()` in this process."""
    import ray

    def trapped(*a: typing.Any, **k: typing.Any) -> None:
        raise ReachedRay("the command went on to start Ray: the bad value was not refused before work")

    monkeypatch.setattr(ray, "init", trapped)
    # A Ray started by an earlier test of the session must not let a slipped value run for real (or wait
    # forever for a GPU): to the command, no Ray is running, so it must start one, which the trap catches.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(sys, "argv", ["dal-dist", *args])
    capfd.readouterr()
    code: int | str | None = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    err = capfd.readouterr().err
    return (code if isinstance(code, int) else (0 if code is None else 1)), err


def check_refused(case: Case, code: int, err: str, args: list[str], root: Path) -> None:
    """Exit 2, one `error:` line that names the option (or the bad value), no traceback."""
    shown = " ".join(repr(a) if not a or " " in a else a for a in args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, f"dal-dist {shown}\n{err}"
    assert code == 2, f"dal-dist {shown}: exit {code}, stderr:\n{err}"
    assert len(lines) == 1 and err.count("\n") <= 1, f"dal-dist {shown}: expected one line on stderr:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    names = {case.option, case.option.lstrip("-").replace("-", "_"), case.option.upper(),
             next(p.python_name for p in PARAMS if (p.command, p.name) == (case.command, case.option))}
    if case.value.strip():
        names.add(case.value.format(**_paths(root)) if "{" in case.value else case.value)
    assert any(n in lines[0] for n in names), f"dal-dist {shown}: the message names neither the option nor " \
                                                f"the value: {lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_value_is_refused_before_work(case: Case, walk_dir: Path, capfd: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """One bad value: exit 2, one line naming it, no traceback, nothing created or changed on disk."""
    if case.value == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    if (case.command, case.option, case.value) in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[case.command, case.option, case.value], strict=True))
    monkeypatch.chdir(walk_dir)  # an empty path means the current directory: the test's own
    args = argv(case, walk_dir)
    before = tree(walk_dir)
    try:
        code, err = run_in_process(args, capfd, monkeypatch)
        check_refused(case, code, err, args, walk_dir)
        after = tree(walk_dir)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"dal-dist {' '.join(args)}: changed on disk: {changed}"
    finally:
        remove_new_entries(walk_dir, before)  # a failed case must not change the inputs of the next ones


def remove_new_entries(root: Path, before: dict[str, tuple[int, int]]) -> None:
    """Delete what a case created under root (outermost new entries), leaving what was there."""
    for rel in sorted(set(tree(root)) - set(before)):
        p = root / rel
        if str(Path(rel).parent) in before or Path(rel).parent == Path("."):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()


# A few cases of each kind through the real entry point (`python -m dal_dist`, a fresh process).
SUBPROCESS_CASES = ["score --mc-samples='abc'", "select --device='bogus'", "pool synth --chunk-size='1000'",
                    "model init --dropout='1.5'", "stream --checkpoint=''", "labels import file='{missing}'"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_real_entry_point_refuses_the_same(case_id: str, walk_dir: Path, capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m dal_dist` gives the same exit status and the same line as the in-process walk."""
    case = next(c for c in CASES if c.id == case_id)
    args = argv(case, walk_dir)
    before = tree(walk_dir)
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # a warning printed on stderr would be a second line
    r = subprocess.run([sys.executable, "-m", "dal_dist", *args], cwd=walk_dir, env=env, capture_output=True,
                       text=True, timeout=300)
    check_refused(case, r.returncode, r.stderr, args, walk_dir)
    assert tree(walk_dir) == before
    monkeypatch.chdir(walk_dir)
    code, err = run_in_process(args, capfd, monkeypatch)
    prog = re.compile(r"(?:python -m )?\S*dal[-_]dist ")  # Click names the program after how it was started
    assert (code, prog.sub("PROG ", err)) == (r.returncode, prog.sub("PROG ", r.stderr))
