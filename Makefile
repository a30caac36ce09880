# Set-up and the two main jobs. Everything installs into .venv; run on a fresh machine as is.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TINY := tiny-models
SMOKE_DATA := data/synth
OUT ?= outputs/demo

.PHONY: install demo test lint bench clean tiny-models smoke-data smoke mini

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

# Random-weight Qwen2.5-VL and SAM2 in tiny-models/{vlm,sam}, for offline runs and tests.
tiny-models: $(TINY)/vlm/config.json

$(SMOKE_DATA)/levels.json: | install
	$(BIN)/socioseg synth $(SMOKE_DATA) --n 60 --size 256

# The synthetic data configs/tiny_cpu.yaml trains on: 60 samples of 256 px in data/synth.
smoke-data: $(SMOKE_DATA)/levels.json

# The README's training smoke run, as written there (CPU, tiny models, under a minute).
smoke: tiny-models smoke-data
	rm -rf runs/tiny
	$(BIN)/socioseg train --config configs/tiny_cpu.yaml --out runs/tiny

# The main job on a bundled example, offline, with socioseg-mini (shipped in the package).
# For real results: $(BIN)/socioseg segment --example 0 --out DIR (downloads the checkpoints).
demo: install
	$(BIN)/socioseg segment --example 4 --vlm mini --sam mini --greedy --out $(OUT)

# socioseg-mini from scratch, the gated curriculum of docs/mini.md: synthetic cities, SAM2,
# phases A-D (a failed gate stops with its numbers), export to src/socioseg/assets/mini,
# held-out eval in runs/mini/results.md. Resumable: run it again after a kill.
SEED ?= 0
mini: install
	$(BIN)/python scripts/train_mini.py --out runs/mini --seed $(SEED)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: install
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) $(TINY) outputs $(SMOKE_DATA) runs/tiny
