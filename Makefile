# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
PIP := $(BIN)/python -m pip --quiet
# The same flags for both lock files, so `make lock` is the one way to write them.
# PIP_COMPILE_ARGS=--upgrade (or --upgrade-package NAME) moves locked versions forward.
PIP_COMPILE_ARGS ?=
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links $(PIP_COMPILE_ARGS)

.PHONY: install run test test-calendar lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Every package comes from a lock file, with its hash; the project itself goes on top
# without dependencies, so nothing outside the lock can slip in.
$(VENV)/.installed-runtime: requirements/runtime.txt pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes -r requirements/runtime.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.installed: requirements/test.txt pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes -r requirements/test.txt
	$(PIP) install --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

clients/typescript/node_modules/.installed: clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund
	touch $@

## make install: .venv with the test set (runtime + test tools)
install: $(VENV)/.installed

## make run: install the runtime set, make a development audit key unless AUDIT_HMAC_KEYS is set,
## migrate, print a write key on an empty database, serve on http://$(HOST):$(PORT)
run: $(VENV)/.installed-runtime
	@$(BIN)/python -m credits_service.audit.keys
	$(BIN)/flask --app app db upgrade
	@$(BIN)/flask --app app keys bootstrap
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers 1 --threads 4 --no-control-socket app:app

## make test: install the test set, run the whole suite (PostgreSQL too when TEST_DATABASE_URL is set).
## Tests needing a program this machine lacks (chromium, buildah) skip and say how to get it.
test: install node_modules/.installed clients/typescript/node_modules/.installed
	$(BIN)/pytest

## make test-calendar: the SQLite suite (tests/integration aside) twice, under a system clock faked by
## Debian's faketime to start just before a month's end, then a year's, and run on: no test may depend
## on the date. Skips, saying so, without faketime (`apt-get install faketime`); make test never needs it.
CALENDAR_STARTS := "2027-11-30 23:58:30" "2027-12-31 23:58:30"
test-calendar: install
	@if ! command -v faketime >/dev/null; then \
		echo "make test-calendar: skipped, faketime is not installed (apt-get install faketime)"; exit 0; fi; \
	for start in $(CALENDAR_STARTS); do \
		echo "make test-calendar: the SQLite suite with the clock starting at $$start UTC"; \
		env -u TEST_DATABASE_URL TZ=UTC faketime -f "@$$start" $(BIN)/pytest -q -p no:cacheprovider \
			--ignore=tests/integration || exit 1; \
	done

## make lock: rewrite requirements/*.txt from pyproject.toml (the direct dependencies) with hashes
lock: | $(BIN)/python
	$(PIP) install -e '.[dev]'
	$(PIP_COMPILE) -o requirements/runtime.txt pyproject.toml requirements/also-lock.in
	$(PIP_COMPILE) --extra test --constraint requirements/runtime.txt -o requirements/test.txt \
		pyproject.toml requirements/also-lock.in
	$(PIP_COMPILE) -o requirements/build.txt requirements/build.in

clean:
	rm -rf $(VENV) node_modules instance .pytest_cache clients/typescript/node_modules clients/typescript/build
