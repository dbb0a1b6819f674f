# Two commands on a fresh machine: `make demo` (install + run the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= .demo

.PHONY: install demo test bench multinode bench-multinode clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,test]'  # faiss-cpu; GPU nodes take [gpu] instead, never both
	touch $(STAMP)

install: $(STAMP)

# The main job: a 3-round simulated active-learning run on package-shipped MNIST, on an in-process local Ray.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)/quickstart
	$(BIN)/dal-dist run --config examples/quickstart.yaml --run-dir $(DEMO_DIR)/quickstart
	$(BIN)/dal-dist status $(DEMO_DIR)/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/dal-dist bench scoring
	$(BIN)/dal-dist bench kcenter

# A real two-node Ray cluster on 127.0.0.1 (ray start + ray job submit), torn down afterwards.
multinode: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/multinode.sh

bench-multinode: $(STAMP)
	$(BIN)/python -m dal_dist.benchmarks.multinode

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
