# Two entry points, each creating the virtualenv it needs on a fresh machine:
#   make demo   pull the embedded default dataset, train a tiny baseline, score it, publish a leaderboard
#               (installs cellbench[train]: the demo trains and runs a model)
#   make test   run the test suite (installs cellbench[all,test])
# `pip install cellbench` alone is the light core: data, scoring and leaderboards, no torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint bench clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[train]"
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(VENV)/bin/cellbench demo --out demo-output

test: $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check cellbench tests benchmarks baselines datasets setup.py
	$(VENV)/bin/ruff format --check cellbench tests benchmarks baselines datasets setup.py

bench: $(VENV)/.test
	$(PY) -m pip install --quiet -e ".[all,test,bench]"
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
