# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test lint bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Each install leaves a stamp in the venv and runs again only when pyproject.toml or
# constraints.txt changed (an editable install picks code changes up by itself).
install: $(VENV)/.installed-run

install-test: $(VENV)/.installed-test

$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt scripts/system-deps.sh | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	bash scripts/system-deps.sh
	touch $@ $(VENV)/.installed-run

# Install, then run the worker on transforms/ with an embedded broker.
run: install
	$(BIN)/etl dev

# Install everything, then lint, type-check and run the whole test suite.
test: install-test
	bash scripts/test.sh

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# The worker against bare librdkafka and aiokafka loops (and Quix Streams and
# bytewax when `make bench-peers` made their environment).
bench: install-test
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python -m bench.worker_throughput

bench-peers:
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet -r bench/peers/requirements.txt

clean:
	rm -rf $(VENV) .venv-peers .etl-data .pytest_cache .mypy_cache .ruff_cache
