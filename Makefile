# Everything a fresh machine needs is installed by these targets (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install browser redis-server run test test-sqlite test-postgres lint format bench bench-dashboard chaos clean check-deploy leak-check security fuzz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# A local .env for development with a freshly generated SECRET_KEY (never committed). PORT and
# REDIS_URL given to make (`PORT=8100 REDIS_URL=redis://127.0.0.1:6379/3 make run`) are written into
# it, so commands run later from the checkout reach the same server and Redis.
.env:
	@sed "s|^SECRET_KEY=.*|SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')|; s|^DJANGO_ENV=.*|DJANGO_ENV=development|; s|^CALLBACK_SIGNING_SECRET=.*|CALLBACK_SIGNING_SECRET=whsec_$$($(PYTHON) -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')|$(if $(PORT),; s|^# PORT=.*|PORT=$(PORT)|)$(if $(REDIS_URL),; s|^REDIS_URL=.*|REDIS_URL=$(REDIS_URL)|)" .env.example > .env
	@echo "Wrote .env (development settings, new SECRET_KEY and CALLBACK_SIGNING_SECRET, port $(or $(PORT),8000), Redis $(or $(REDIS_URL),redis://127.0.0.1:6379/0))."

# Find or start Redis (installing redis-server when none answers and it is missing), migrate, create a
# demo staff user and an API key, then run web + worker + scheduler until stopped. `exec`: run_dev is
# make's own child, so it stops with make however make is stopped (see messaging/devtools/supervisor.py).
# RUN_ARGS go to run_dev, e.g. RUN_ARGS=--new-demo-password.
run: install .env
	exec $(PY) manage.py run_dev $(RUN_ARGS)

# redis-server for the test suite (the recovery tests start their own), installed from the system's
# packages when missing (apt-get, through sudo when not root); the suite starts one for its run when
# none answers at TEST_REDIS_URL.
redis-server: install
	@$(PY) -m messaging.devtools.localredis install

# Debian's Chromium for the Playwright browser tests (Playwright's own browser download is not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# apt-get waits up to 10 minutes for another package manager run to finish instead of failing at once.
APT := $(SUDO) apt-get -o DPkg::Lock::Timeout=600
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "Installing Debian's chromium for the browser tests..."; \
	  $(APT) update -qq && $(APT) install -y -qq chromium >/dev/null; }

# `make test` is what CI runs: the whole suite on SQLite, then the whole suite on PostgreSQL (the
# production database), each on a fresh test database; both always run, and it fails if either fails.
# `make test-sqlite` or `make test-postgres` runs one of them alone (no PostgreSQL needed for the first).
test: install browser redis-server
	@failed=""; \
	$(MAKE) --no-print-directory test-sqlite || failed="$$failed SQLite"; \
	$(MAKE) --no-print-directory test-postgres || failed="$$failed PostgreSQL"; \
	if [ -n "$$failed" ]; then echo "make test: the suite failed on:$$failed (see above)" >&2; exit 1; fi

# SQLite: pytest-django makes a fresh test_db.sqlite3 (DATABASE_URL is set here, so an exported one
# cannot move this run to another database).
test-sqlite: install browser redis-server
	@echo "== test suite on SQLite (test_db.sqlite3) =="
	DATABASE_URL=sqlite:///$(CURDIR)/db.sqlite3 $(PY) -m pytest $(PYTEST_ARGS)

# PostgreSQL: TEST_POSTGRES_URL names the server and a database name used only by this target;
# pytest-django creates test_<name> (here test_qs_suite). It is dropped before the run (a leftover of an
# interrupted run) and again after it (pytest-django's own drop fails while a test thread still holds a
# connection); the database <name> itself is never created or written to. Fails at once with a clear
# message when the server does not answer.
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/qs_suite

define PG_DROP_TEST_DB
import sys
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

url, after = sys.argv[1], sys.argv[2:] == ["after"]
params = conninfo_to_dict(url)
name = "test_" + params.get("dbname", "")
where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432} as {params.get('user') or '(default user)'}"
try:
    with psycopg.connect(make_conninfo(url, dbname="postgres", connect_timeout=5), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
except psycopg.Error as error:
    if after:
        sys.exit(f"make test-postgres: could not drop {name} after the run: {str(error).strip()}")
    sys.exit(
        f"make test-postgres: PostgreSQL at {where} did not answer or refused: {str(error).strip()}\n"
        "Start PostgreSQL or point TEST_POSTGRES_URL at one (postgres://user@host:port/name);\n"
        "without PostgreSQL, run the SQLite suite alone with `make test-sqlite`."
    )
if not after:
    print(f"== test suite on PostgreSQL (database {name} on {where}, created fresh) ==")
endef
export PG_DROP_TEST_DB

test-postgres: install browser redis-server
	@$(PY) -c "$$PG_DROP_TEST_DB" "$(TEST_POSTGRES_URL)"
	@DATABASE_URL="$(TEST_POSTGRES_URL)" $(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	$(PY) -c "$$PG_DROP_TEST_DB" "$(TEST_POSTGRES_URL)" after; exit $$status

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
	@command -v wrk >/dev/null || ($(APT) update -qq && $(APT) install -y -qq wrk)
	$(PY) bench/run.py $(BENCH_ARGS)

# Dashboard page timings at 1,000,000 messages (SQLite by default; BENCH_DATABASE_URL for PostgreSQL).
bench-dashboard: install
	$(PY) bench/dashboard.py

# 1,000 messages while workers are SIGKILLed and Redis restarts; prints lost (must be 0). Not run by CI.
chaos: install
	$(PY) bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache test-artifacts .run
