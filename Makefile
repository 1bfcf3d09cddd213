# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install browser run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Debian's Chromium, for the test that renders /docs with no internet.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

install: $(VENV)/.installed

## make run: install, make a development audit key unless AUDIT_HMAC_KEYS is set, migrate,
## print a write key on an empty database, serve on http://$(HOST):$(PORT)
run: install
	@$(BIN)/python -m credits_service.audit_dev_key
	$(BIN)/flask --app app db upgrade
	@$(BIN)/flask --app app keys bootstrap
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers 1 --threads 4 --no-control-socket --access-logfile - app:app

## make test: install, run the whole suite (PostgreSQL too when TEST_DATABASE_URL is set)
test: install node_modules/.installed browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) node_modules instance .pytest_cache
