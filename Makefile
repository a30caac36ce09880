# Set-up and the two main jobs. Everything installs into .venv; run on a fresh machine as is.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TINY := tiny-models
OUT ?= outputs/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a bare dependency on torch would pull GBs of CUDA wheels on CPU hosts.
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,demo,gis]"
	touch $@

$(TINY)/vlm/config.json: | install
	$(BIN)/socioseg tiny-models $(TINY)

# The main job on a bundled example, offline, with tiny random-weight models.
# For real results: $(BIN)/socioseg segment --example 0 --out DIR (downloads the checkpoints).
demo: install $(TINY)/vlm/config.json
	$(BIN)/socioseg segment --example 0 --vlm $(TINY)/vlm --sam $(TINY)/sam --out $(OUT)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: install
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) $(TINY) outputs
