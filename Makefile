# The two commands of the README:
#   make demo   the demo world on the embedded default (no servers needed)
#   make test   the whole test suite against a real PostgreSQL and a real Kafka broker,
#               which scripts/services.sh installs and starts on this machine, and a real
#               headless chromium, which scripts/browser.sh installs
# Both create the virtualenv .venv with the project installed (editable) on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint check services services-stop browser bench bench-publish bench-project bench-replay bench-http clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/eventstore demo --serve

services:
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

# Debian's chromium and chromedriver, for the time-travel page's tests (tests/browser/).
browser:
	scripts/browser.sh

test: $(BIN)/.installed services browser
	eval "$$(scripts/services.sh env)" && $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# The benchmarks also need the bench extra (the peer library bench/append.py compares with).
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--quick" or "--only event,peer-sqlite".
BENCH_ARGS ?=

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BIN)/.bench-installed services
	eval "$$(scripts/services.sh env)" && $(BIN)/python bench/append.py \
		--database-url "$$EVENTSTORE_TEST_DATABASE_URL" $(BENCH_ARGS)

bench-publish: $(BIN)/.installed services
	eval "$$(scripts/services.sh env)" && $(BIN)/python bench/publish.py \
		--database-url "$$EVENTSTORE_TEST_DATABASE_URL" --kafka "$$EVENTSTORE_TEST_KAFKA_BOOTSTRAP"

bench-project: $(BIN)/.installed services
	eval "$$(scripts/services.sh env)" && $(BIN)/python bench/project.py \
		--database-url "$$EVENTSTORE_TEST_DATABASE_URL" \
		--kafka-bootstrap "$$EVENTSTORE_TEST_KAFKA_BOOTSTRAP" $(BENCH_ARGS)

# Replay against the peer library too (the bench extra), on PostgreSQL, SQLite and Kafka.
bench-replay: $(BIN)/.bench-installed services
	eval "$$(scripts/services.sh env)" && $(BIN)/python bench/replay.py \
		--database-url "$$EVENTSTORE_TEST_DATABASE_URL" \
		--kafka-bootstrap "$$EVENTSTORE_TEST_KAFKA_BOOTSTRAP" $(BENCH_ARGS)

# The HTTP API: a real `eventstore serve` process against the library in process (PostgreSQL;
# BENCH_ARGS="--sqlite" adds SQLite, "--quick" a smoke run, "--profile" a server profile).
bench-http: $(BIN)/.installed services
	eval "$$(scripts/services.sh env)" && $(BIN)/python bench/http.py \
		--database-url "$$EVENTSTORE_TEST_DATABASE_URL" $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
