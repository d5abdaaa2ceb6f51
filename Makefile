# Set-up and everyday commands. Each target creates/reuses .venv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prealign-installed

.PHONY: demo smoke test test-unit bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: a CPU wheel of 2.13.0 is available here; an unpinned torch pulls CUDA wheels.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	# lmms-eval's API, so that the adapter's tests run against it; without its dependencies, which
	# include torchvision (a CUDA build here that breaks transformers' image processors).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps lmms-eval==0.7.3
	$(PY) -m pip install -q --disable-pip-version-check loguru pytz
	touch $(STAMP)

demo: $(STAMP)  ## the main job: the nano world on its embedded defaults (shipped backbones)
	$(VENV)/bin/prealign nano run runs/nano

smoke: $(STAMP)  ## every variant's model contract on tiny random-init models
	$(VENV)/bin/prealign smoke

test: $(STAMP)  ## lint + the whole test suite, end-to-end tests included
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

test-unit: $(STAMP)  ## fast iteration: unit tests only
	$(PY) -m pytest -q -m "not e2e"

bench: $(STAMP)  ## speed, measured side by side: nano LM pre-training with padded and with packed batches
	$(PY) benchmarks/nano_lm_padding.py --size perceiver
	$(PY) benchmarks/nano_lm_padding.py --size target

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
