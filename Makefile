# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create the virtualenv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test lint bench-webhooks clean

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

bench-webhooks: $(BIN)/.installed
	$(BIN)/python -m bench.webhooks

clean:
	rm -rf $(VENV) var
