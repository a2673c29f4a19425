# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench screenshots dist-check clean

# Every extra and the test tools, at the exact versions CI tests with (constraints.txt;
# pyproject.toml holds the ranges a library user may have). __init__.py holds the version,
# which the installed metadata (and so `marketspine --version`) takes at install.
$(STAMP): pyproject.toml constraints.txt src/marketspine/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,all]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m marketspine._cli.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Tests mostly wait on sockets and child processes, so more workers than cores pays off;
# `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= 4

# Bytecode is cached under .venv even where PYTHONDONTWRITEBYTECODE is set (it is on our
# machines): without a cache every worker rewrote and compiled every test module, and every
# child process (serve, collect, the simulator) compiled the package again, about 10 s a run.
# The slowest tests are listed at the end: CI gives the suite 4 minutes on a fresh clone.
test: lint
	env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache \
		$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

bench: $(STAMP)
	$(BIN)/python -m bench

# The README's admin-page pictures, taken by the browser test itself.
screenshots: $(STAMP)
	MARKETSPINE_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/serve/test_admin_browser.py

# The sdist and wheel built and installed as a user would: without extras in a clean venv,
# then with [sim] (see .ci/smoke_wheel.sh).
dist-check: $(STAMP)
	BUILD_PYTHON=$(BIN)/python PYTHON=$(PYTHON) .ci/smoke_wheel.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
