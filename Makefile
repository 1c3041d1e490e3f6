# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create the virtualenv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test lint bench-webhooks bench-sync browser browser-for-tests clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/carecal demo

serve: $(BIN)/.installed
	$(BIN)/carecal serve

test: $(BIN)/.installed browser-for-tests
	$(BIN)/ruff check plugin adapters tests bench
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests (tests/integration/test_*_browser.py skip without
# it): about 350 MB from Debian's packages, needs root and apt-get.
browser:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

# `make test` installs it where it can (root with apt-get: CI, a fresh machine), so that the
# browser tests run there; elsewhere, or with NO_BROWSER=1, they skip and say why.
browser-for-tests:
	@if [ -z "$(NO_BROWSER)" ] && ! command -v chromium >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing Debian's Chromium for the browser tests (log: $(VENV)/browser.log)"; \
	  mkdir -p $(VENV) && $(MAKE) --no-print-directory browser >$(VENV)/browser.log 2>&1 \
	    || echo "make: Chromium did not install (see $(VENV)/browser.log): the browser tests will skip"; \
	fi

bench-webhooks: $(BIN)/.installed
	$(BIN)/python -m bench.webhooks

# The CalDAV sync benchmark also runs vdirsyncer (the `bench` extra). About 10 minutes.
$(BIN)/.installed-bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench-sync: $(BIN)/.installed-bench
	$(BIN)/python -m bench.sync

clean:
	rm -rf $(VENV) var
