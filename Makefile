# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
# Each installs what it needs into .venv when missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
BENCH_STAMP := $(VENV)/.stamp-bench
DOCS_STAMP  := $(VENV)/.stamp-docs

.PHONY: run test unit chaos drill browser bench lint docs docs-serve screenshots install clean

run: $(STAMP)
	$(BIN)/consent-relay run

test: $(STAMP) lint docs
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# Break workers, brokers and Engage mid-run (needs PostgreSQL, Redis, RabbitMQ); part of `test`.
chaos: $(STAMP)
	$(BIN)/python -m pytest -m chaos

# The delivery drill driven from outside: faulty Engage stand-in at 10/s, a worker killed mid-run.
drill: $(STAMP)
	$(BIN)/python -m pytest tests/e2e/test_drill.py

# The operator page in headless Chromium (Debian's chromium + playwright-core: .ci/install-browser).
browser: $(STAMP)
	bash .ci/install-browser
	$(BIN)/python -m pytest tests/browser

# Intake and delivery measured against baselines (needs PostgreSQL and Redis); a few minutes.
# FULL=1: 10,000 decisions and longer runs. Results in bench/results/ (docs/benchmark.md).
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(FULL),--full,)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The documentation site (mkdocs.yml, docs/): built strictly, so a broken link or anchor, or a
# page left out of the navigation, fails `make test`. Output in site/ (git-ignored). Not --quiet:
# with it mkdocs 1.6 no longer counts the warnings that --strict turns into a failure.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Refresh docs/ops-*.png, the operator-page images of the docs, on purpose: the browser test
# with its screenshots written to docs/ instead of a temporary directory.
screenshots: $(STAMP)
	bash .ci/install-browser
	CONSENT_RELAY_SCREENSHOTS=$(CURDIR)/docs $(BIN)/python -m pytest tests/browser

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "consent-relay needs Python 3.11 or newer (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var node_modules site .pytest_cache .mypy_cache .ruff_cache
