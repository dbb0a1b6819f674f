# Two commands on a fresh machine: `make demo` (install + run the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= .demo

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
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

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
