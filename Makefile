# Two commands users need: `make demo` (the main job) and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: setup demo test docs lint format clean

# torch/torchvision are pinned here (they install from this machine's disk); pyproject keeps ranges open.
$(VENV)/.installed: pyproject.toml
	@bash tools/setup_system.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,decord,torchcodec,triton,viz,parquet,report,ray,export,tensorboard]'
	@touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/vidtok demo --out $(OUT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check vidtok tests tools
	$(VENV)/bin/ruff format --check vidtok tests tools
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check vidtok tests tools

format: $(VENV)/.installed
	$(VENV)/bin/ruff format vidtok tests tools
	$(VENV)/bin/ruff check --fix vidtok tests tools

clean:
	rm -rf $(VENV) $(OUT) site .pytest_cache .ruff_cache
