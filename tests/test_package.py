"""The package's shape: no import cycles (imports inside functions count), dependencies pointing one way
along the pipeline, and a public API that `import dal_dist` offers without loading torch or ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dal_dist"
# Layers from the bottom up: a module may import its own layer or lower ones, never a higher one.
LAYERS = [
    {"errors", "atomic", "fs", "locks", "device", "interrupts", "ray_connect"},
    {"pool"},
    {"models"},
    {"scoring", "training", "selection"},
    {"methods"},
    {"stream"},
    {"driver"},
    {"benchmarks"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (lazy imports included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    head = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(head + ([base] if base else []))
                for a in node.names:
                    target = f"{base}.{a.name}"
                    if target in mods:
                        graph[mod].add(target)
                    elif base in mods:
                        graph[mod].add(base)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _top(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependencies_point_down_the_pipeline():
    upward = []
    for mod, targets in import_graph().items():
        if _top(mod) not in LAYER_OF:
            continue
        for t in targets:
            if _top(t) in LAYER_OF and LAYER_OF[_top(t)] > LAYER_OF[_top(mod)]:
                upward.append(f"{mod} -> {t}")
    assert upward == []


def test_every_module_is_in_a_layer():
    assert sorted({_top(m) for m in _modules()} - set(LAYER_OF) - {""}) == []


def test_import_dal_dist_loads_neither_torch_nor_ray():
    code = ("import sys, dal_dist; heavy = [m for m in ('torch', 'ray', 'pyarrow', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api_names_resolve_with_docstrings():
    import dal_dist

    for name in ("score_pool", "select", "kcenter_greedy", "run", "RunConfig", "load_config", "DalDistError",
                 "__version__"):
        assert name in dal_dist.__all__
    for name in dal_dist.__all__:
        value = getattr(dal_dist, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"dal_dist.{name} has no docstring"
    with pytest.raises(AttributeError):
        dal_dist.no_such_name  # noqa: B018


def test_no_private_name_is_imported_across_modules():
    crossing = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dal_dist"):
                crossing += [f"{mod}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert crossing == []
