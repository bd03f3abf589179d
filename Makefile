# The README's two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DJANGO_SETTINGS_MODULE ?= config.settings.local

.PHONY: run test venv browser db bench lint check lock clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

db: venv
	$(PY) manage.py ensure_database
	$(PY) manage.py migrate --no-input

run: db
	$(PY) manage.py seed_demo --customers 3000
	$(VENV)/bin/honcho start -f Procfile

# The browser tests drive Debian's chromium (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; } || \
	  { echo "could not install chromium: run 'apt-get install chromium' as root" >&2; exit 1; }; }

test: venv browser
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

check: venv
	$(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=config.settings.production DJANGO_SECRET_KEY=$$($(PY) -c "import secrets; print(secrets.token_urlsafe(64))") \
	  JWT_SIGNING_KEY=ci-jwt-key-at-least-32-bytes-long-xxxxxxxx DATABASE_URL=postgres://postgres@127.0.0.1:5432/customer_service \
	  DJANGO_ALLOWED_HOSTS=customers.example.com $(PY) manage.py check --deploy --fail-level WARNING
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

# Benchmarks (never part of `make test`); e.g. `make bench BENCH_ARGS="--only get_hit,get_miss --duration 30"`.
bench: db
	$(PY) tests/perf/run.py $(BENCH_ARGS)

lock: venv
	{ echo "# Every package, transitive ones included, pinned. Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | sort -f; } > requirements.txt
