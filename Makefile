# Set-up and everyday commands. Each target creates/reuses its venv and installs what it needs.
# Version sets (tools/install_venv.sh): `locked` = requirements/lock.txt, the exact set the suite
# passed on (demo, test, CI); `latest` and `lowest` check both ends of pyproject.toml's ranges.
VENV ?= .venv
VERSIONS ?= locked
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prealign-installed

.PHONY: demo smoke test test-unit test-latest test-lowest lock bench lint clean vlmeval-venv

$(STAMP): pyproject.toml requirements/lock.txt tools/install_venv.sh
	tools/install_venv.sh $(VENV) $(VERSIONS)
	touch $(STAMP)

demo: $(STAMP)  ## the main job: the nano world on its embedded defaults (shipped backbones)
	$(VENV)/bin/prealign nano run runs/nano

smoke: $(STAMP)  ## every variant's model contract on tiny random-init models
	$(VENV)/bin/prealign smoke

VLMEVAL_VENV ?= .venv-vlmeval
VLMEVAL_STAMP := $(VLMEVAL_VENV)/.prealign-installed

$(VLMEVAL_STAMP): requirements/vlmeval-lock.txt tools/install_vlmeval_venv.sh
	tools/install_vlmeval_venv.sh $(VLMEVAL_VENV)
	touch $(VLMEVAL_STAMP)

vlmeval-venv: $(VLMEVAL_STAMP)  ## VLMEvalKit's test environment, apart from the main one (tests/test_vlmeval.py)

test: $(STAMP) $(VLMEVAL_STAMP)  ## lint + the whole test suite, end-to-end tests included (VLMEvalKit's too)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

test-unit: $(STAMP)  ## fast iteration: unit tests only
	$(PY) -m pytest -q -m "not e2e"

test-latest:  ## the suite on the newest releases the declared ranges allow, in a venv made anew
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest VERSIONS=latest

test-lowest:  ## the suite with every direct dependency at its declared lower bound, in a venv made anew
	rm -rf .venv-lowest
	$(MAKE) test VENV=.venv-lowest VERSIONS=lowest

lock: test-latest  ## refresh requirements/lock.txt from the newest set, once the suite has passed on it
	{ sed -n '1,2p' requirements/lock.txt; .venv-latest/bin/python -m pip freeze --exclude-editable; } \
		> requirements/lock.new && mv requirements/lock.new requirements/lock.txt

bench: $(STAMP)  ## speed side by side: LM pre-training padded vs packed; baseline vs DPA vs Llava; serving batched vs not; paper-scale ratios
	$(PY) benchmarks/nano_lm_padding.py --size perceiver
	$(PY) benchmarks/nano_lm_padding.py --size target
	$(VENV)/bin/prealign bench --preset nano --json runs/bench/nano.json
	$(PY) benchmarks/serving.py
	$(VENV)/bin/prealign analyze scale

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest .pytest_cache .ruff_cache src/*.egg-info
