# Regio: `make run` serves the service, `make test` runs the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint format bench browser sandbox sherpa-deps clean-instance

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# sherpa (requirements.txt) builds from source: its build tools come first (sherpa-deps), and
# the venv's python3 must come first on the PATH for the build's helper scripts
$(VENV)/.runtime-installed: requirements.txt pyproject.toml | $(BIN)/python sherpa-deps
	PATH="$(abspath $(BIN)):$$PATH" $(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt requirements.txt pyproject.toml | $(BIN)/python sherpa-deps
	PATH="$(abspath $(BIN)):$$PATH" $(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps -e .
	touch $@ $(VENV)/.runtime-installed

## run: the whole service (embedded Redis, demo archive, index, workers, web) in the foreground
run: $(VENV)/.runtime-installed sandbox
	$(BIN)/python -m app run

## browser: Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium)
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else echo "Browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi

## sandbox: Debian's bubblewrap, which confines the science scripts (README: "Containment of
## scripts"). Without it (not root) runs use the fallback, which does not isolate files: say so.
sandbox:
	@if [ -x /usr/bin/bwrap ] || command -v bwrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	else echo "WARNING: bubblewrap is missing: scripts run unconfined (REGIO_SANDBOX=auto falls" \
	  "back; the sandbox tests are skipped). Install it: sudo apt-get install bubblewrap" >&2; fi

## sherpa-deps: Debian's byacc, flex, FFTW and pkg-config, which sherpa's build from PyPI needs
SHERPA_DEPS := byacc flex libfftw3-dev pkg-config
sherpa-deps:
	@missing=$$(for p in $(SHERPA_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	else echo "sherpa builds from source and needs: sudo apt-get install" $$missing >&2; exit 1; fi

## test: install what the tests need and run them all
test: $(VENV)/.dev-installed browser sandbox
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark in bench/; each ends with a `RESULT name=value ...` line
bench: $(VENV)/.dev-installed
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-instance:
	rm -rf instance
