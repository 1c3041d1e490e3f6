# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create the virtualenv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test lint bench-webhooks bench-sync browser clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/carecal demo

serve: $(BIN)/.installed
	$(BIN)/carecal serve

test: $(BIN)/.installed
	$(BIN)/ruff check plugin adapters tests bench
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser test (tests/integration/test_claim_browser.py skips
# without it). Opt-in: about 350 MB from Debian's packages, needs root.
browser:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

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
