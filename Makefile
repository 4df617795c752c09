# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install run lint test test-firestore test-legacy test-indexes fuzz lock clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet -e ./client
	touch $@

# The Python client (its own distribution, client/): its tests run in the Firestore run.
$(BIN)/.installed: client/pyproject.toml

install: $(BIN)/.installed

## Install, then run the service on http://127.0.0.1:8080 with its own emulator.
run: install
	$(BIN)/metering serve

## Lint, format check and types (pinned in the test extra); `make test` runs it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Install, then lint, then run the whole suite on both of Google's emulators.
## Lint comes first and stops the run: a style or type error fails in seconds, not minutes.
test: lint
	$(MAKE) test-firestore test-legacy test-indexes

## The suite on the Firestore-mode emulator (like today's Cloud Datastore).
test-firestore: install
	METERING_TEST_EMULATOR=firestore $(BIN)/pytest $(PYTEST_ARGS)

## The suite on the legacy emulator, refusing queries that index.yaml does not cover.
test-legacy: install
	METERING_TEST_EMULATOR=legacy $(BIN)/pytest $(PYTEST_ARGS)

## Prove every composite index of index.yaml is needed: without any one, tests fail.
test-indexes: install
	$(BIN)/python scripts/check_indexes.py

## Fuzz every endpoint far longer than `make test` does (schemathesis, see tests/test_fuzz.py).
fuzz: install
	METERING_TEST_EMULATOR=firestore METERING_FUZZ_EXAMPLES=500 METERING_FUZZ_SEQUENCES=200 \
		$(BIN)/pytest tests/test_fuzz.py $(PYTEST_ARGS)

## Regenerate requirements.txt, the hash-pinned lock App Engine installs, from
## pyproject.toml: one set for Python 3.11 and newer (App Engine runs 3.12). Pins already
## in the file are kept; `make lock LOCK_ARGS=--upgrade` moves everything to the newest.
## tests/test_lock.py checks that the lock still satisfies pyproject.toml.
UV_VERSION := 0.13.8
LOCK_ARGS ?=
lock: install
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o requirements.txt

clean:
	rm -rf $(VENV) .metering-data .pytest_cache .mypy_cache .ruff_cache
