"""The README's Python API example runs as printed (pool → score → select → rounds), in a fresh directory."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_block() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_api_block(), "README.md (Python API)", "exec"), scope)
    assert scope["summary"].rows == 500
    assert scope["top"].num_rows == 50 and scope["diverse"].num_rows == 50
    assert len(set(scope["diverse"].column("id").to_pylist())) == 50
    assert pq.read_table(tmp_path / "pick.parquet").column("id").to_pylist() == scope["diverse"].column("id").to_pylist()
    assert scope["outcome"].status == "done"
    assert scope["dal_dist"].run_status("runs/r1")["labels"] == 20 + 2 * 20
