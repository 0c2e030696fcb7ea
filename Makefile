# Everything a fresh machine needs is installed by these targets (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install browser run test lint format bench bench-dashboard chaos clean check-deploy leak-check security fuzz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# A local .env for development with a freshly generated SECRET_KEY (never committed).
.env:
	sed "s|^SECRET_KEY=.*|SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')|; s|^DJANGO_ENV=.*|DJANGO_ENV=development|; s|^CALLBACK_SIGNING_SECRET=.*|CALLBACK_SIGNING_SECRET=whsec_$$($(PYTHON) -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')|" .env.example > .env
	@echo "Wrote .env (development settings, new SECRET_KEY and CALLBACK_SIGNING_SECRET)."

# Migrate, create a demo staff user and an API key, then run web + worker + scheduler (+ Redis if needed).
run: install .env
	$(PY) manage.py run_dev

# Debian's Chromium for the Playwright browser tests (Playwright's own browser download is not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "Installing Debian's chromium for the browser tests..."; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Django's deployment checklist against production settings (throwaway SECRET_KEY and hosts); any
# warning fails.
check-deploy: install
	DJANGO_ENV=production SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	ALLOWED_HOSTS=queue.example.com SMS_API_URL=https://sms.example.com \
	$(PY) manage.py check --deploy --fail-level WARNING

# detect-secrets over every tracked file: fails on a secret-looking string that the baseline file does
# not list. Mark a false positive with an inline comment (see README, "Security").
SCAN_BASELINE := .detect-secrets.json
leak-check: install
	git ls-files -z | xargs -0 $(VENV)/bin/detect-secrets-hook --baseline $(SCAN_BASELINE)

security: check-deploy leak-check

# Only the schemathesis run against a live server (it is also part of `make test`).
fuzz: install
	$(PY) -m pytest tests/test_fuzz_api.py $(PYTEST_ARGS)

# Benchmarks (not run by CI): needs wrk for the HTTP load, installed from Debian's packages when missing.
bench: install
	@command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)
	$(PY) bench/run.py $(BENCH_ARGS)

# Dashboard page timings at 1,000,000 messages (SQLite by default; BENCH_DATABASE_URL for PostgreSQL).
bench-dashboard: install
	$(PY) bench/dashboard.py

# 1,000 messages while workers are SIGKILLed and Redis restarts; prints lost (must be 0). Not run by CI.
chaos: install
	$(PY) bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache test-artifacts .run
