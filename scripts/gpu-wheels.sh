#!/usr/bin/env bash
# Wheels that scripts/gpu-check.sh needs and the GPU image lacks (Python 3.12 there), into .whl/ (git-ignored).
# The image has torch, torchvision, pyarrow, numpy, typer, pyyaml, scikit-learn; not pydantic or faiss.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
pkgs=$("${PYTHON:-.venv/bin/python}" - <<'PYEOF'
from importlib.metadata import version
for name in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "faiss-cpu"):
    print(f"{name}=={version(name)}")
PYEOF
)
for p in $pkgs; do
  "${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$p"
done
du -sh .whl
