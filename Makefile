# Two commands do all set-up on a fresh clone:
#   make demo   -> creates .venv if missing, installs exitgym, runs the main job on the embedded default
#   make test   -> creates .venv if missing, installs exitgym with dev extras, runs the test suite;
#                  then the same in .venv-ray with exitgym[ray] (Ray RLlib + Tune, which pins its
#                  own gymnasium): the whole suite again, tests/ray included
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.exitgym-installed
RAY_VENV ?= .venv-ray
RAY_PY := $(RAY_VENV)/bin/python
RAY_STAMP := $(RAY_VENV)/.exitgym-installed

.PHONY: demo test lint bench install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so a loose requirement never pulls the CUDA wheels
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# A separate venv: Ray's rllib extra pins gymnasium (1.2.2 for Ray 2.60) and must not downgrade
# the newest gymnasium that .venv tests.
$(RAY_STAMP): pyproject.toml
	test -x $(RAY_PY) || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_PY) -m pip install -q --upgrade pip
	$(RAY_PY) -m pip install -q torch==2.13.0
	$(RAY_PY) -m pip install -q -e ".[ray,dev]"
	touch $(RAY_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/exitgym demo

test: $(STAMP) $(RAY_STAMP)
	$(PY) -m pytest -q
	# -o addopts: drop pyproject's --ignore=tests/ray; here Ray is installed
	$(RAY_PY) -m pytest -q -o addopts=-ra tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/exitgym bench --out bench-out
