# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when pyproject.toml changes, and only then.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PG_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
# Tests run on pytest-xdist workers: end-to-end calls mostly wait on sockets, so more
# workers than cores pays. Work stealing: plain load scheduling left one worker running the
# end-to-end files alone for the last 30 s. Calls run on compressed time
# (HOTLINE_TEST_CLOCK_SPEED, see tests/stack.py).
PYTEST := $(BIN)/python -m pytest -q --dist worksteal -n $(or $(TEST_WORKERS),6)
PG_WORKERS ?= 3
# Each worker imports the app and rewrites the test modules' asserts: with bytecode caches
# (gitignored) that takes half the time, so tests write them even where the shell says not.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck unit pg-test install system-deps bench fleet screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) system-deps

# Debian packages the demo and the tests use, as `command:package` (one per line, so that
# each feature adds its own): espeak-ng gives the simulators real speech (without it they
# fall back to a tone); nginx is the fleet's load balancer (`make fleet`, tests/test_fleet.py);
# chromium runs the dashboard's browser tests (Playwright drives it).
SYSTEM_PACKAGES := \
  espeak-ng:espeak-ng \
  nginx:nginx \
  chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "could not install$$missing"; \
	  else echo "not installed:$$missing (run as root with apt-get to install)"; fi; fi

# The dashboard's URL and keys are printed first; `make demo SERVE=1` keeps it up after the
# calls, until Ctrl-C.
demo: install
	$(BIN)/hotline demo $(if $(SERVE),--serve)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests that need no socket: seconds, for the edit-test loop.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not sockets"

# The store and end-to-end tests again, on PostgreSQL (CI always; locally when reachable).
pg-test: $(STAMP)
	HOTLINE_TEST_DATABASE_URL=$(PG_TEST_URL) $(PYTEST) -m database

# ruff, then mypy, the SQLite suite and the store tests again on PostgreSQL, all three at
# once (a call mostly waits on sockets: one run alone leaves the cores half idle). mypy's
# and PostgreSQL's output is shown after the SQLite suite's. Then the fleet's tests alone,
# on PostgreSQL: each runs two `hotline serve` processes behind nginx, and beside nine
# other test workers on two cores their calls starved. Any failure fails the target.
test: install
	$(BIN)/ruff check .
	@mkdir -p .test-logs; \
	$(BIN)/mypy > .test-logs/mypy.log 2>&1 & mypy=$$!; \
	HOTLINE_TEST_DATABASE_URL=$(PG_TEST_URL) HOTLINE_TEST_REDIS_URL=$(REDIS_TEST_URL) \
	  $(PYTEST) -n $(PG_WORKERS) -m "database and not fleet" > .test-logs/postgresql.log 2>&1 & pg=$$!; \
	echo "== the suite on SQLite"; \
	HOTLINE_TEST_REDIS_URL=$(REDIS_TEST_URL) $(PYTEST) -m "not fleet"; sqlite=$$?; \
	wait $$mypy; mypy_rc=$$?; wait $$pg; pg_rc=$$?; \
	echo "== mypy"; cat .test-logs/mypy.log; \
	echo "== the store and end-to-end tests again, on PostgreSQL"; cat .test-logs/postgresql.log; \
	echo "== the fleet (nginx, two instances, Redis), on PostgreSQL"; \
	HOTLINE_TEST_DATABASE_URL=$(PG_TEST_URL) HOTLINE_TEST_REDIS_URL=$(REDIS_TEST_URL) \
	  $(PYTEST) -n 3 -m fleet; fleet=$$?; \
	exit $$(( sqlite || mypy_rc || pg_rc || fleet ))

bench: install
	$(BIN)/hotline bench greeting

# Two instances behind a private nginx on http://127.0.0.1:8080, on this machine's Redis and
# the HOTLINE_DATABASE_URL store (README: "Running in production"); Ctrl-C stops them all.
fleet: install
	$(BIN)/hotline fleet up

# The dashboard's screenshots in docs/screenshots/, taken again by its browser test.
screenshots: install
	HOTLINE_TEST_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q -p no:xdist tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .mypy_cache .test-logs hotline.db
