# Two entry points, each creating the virtualenv it needs on a fresh machine:
#   make demo   pull the embedded default dataset, train a tiny baseline, score it, publish a leaderboard
#               (installs cellbench[train]: the demo trains and runs a model)
#   make test   run the test suite (installs cellbench[all,test])
# `pip install cellbench` alone is the light core: data, scoring and leaderboards, no torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2
# axe-core for the accessibility checks of the leaderboard site (tests/leaderboard), from npm
AXE_VERSION ?= 4.14.1
TEST_TOOLS ?= .test-tools

.PHONY: demo test lint bench bench-publish clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -c constraints.txt -e ".[train]"
	touch $@

# constraints.txt pins the test environment (pip's resolver gives up without it; see the file)
$(VENV)/.test: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test]"
	touch $@ $(VENV)/.runtime

# The browser tests use the system chromium (never downloaded) and axe-core from npm; without
# npm the accessibility checks are skipped (and say so).
$(TEST_TOOLS)/node_modules/axe-core/axe.min.js:
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-save --no-audit --no-fund --prefix $(TEST_TOOLS) axe-core@$(AXE_VERSION); \
	else echo "npm not found: the axe-core accessibility checks will be skipped"; fi

demo: $(VENV)/.runtime
	$(VENV)/bin/cellbench demo --out demo-output

test: $(VENV)/.test $(TEST_TOOLS)/node_modules/axe-core/axe.min.js
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check cellbench tests benchmarks baselines datasets setup.py
	$(VENV)/bin/ruff format --check cellbench tests benchmarks baselines datasets setup.py

bench: $(VENV)/.test
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test,bench]"
	$(PY) benchmarks/run_all.py

# time `cellbench leaderboard publish` on leaderboards/ (cold and warm figure cache)
bench-publish: $(VENV)/.test
	$(PY) benchmarks/bench_publish.py --pull

clean-venv:
	rm -rf $(VENV)
