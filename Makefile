# saas-llm: the obvious targets. `make up` runs the platform, `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-chaos test-all lint format typecheck bench migrate clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,proxy]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/saas-llm up

test: $(STAMP)
	$(BIN)/pytest -m "not chaos"

test-chaos: $(STAMP)
	$(BIN)/pytest -m chaos

test-all: test test-chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker shared cli saas_llm_client
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy api worker shared cli saas_llm_client

bench: $(STAMP)
	$(BIN)/python -m bench.throughput

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
